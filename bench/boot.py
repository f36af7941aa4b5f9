#!/usr/bin/env python3
"""bench/boot: start-to-ready and start-to-exit of the test guest, vvmm vs
QEMU/KVM (-M microvm and -M pc) booting the very same bzImage, 1 and 2 vCPUs;
medians of --runs runs, ratios vvmm/QEMU; and vvmm's memory overhead (peak RSS
minus the guest memory it touched).

    bench/boot.py [--runs 7] [--vvmm build/vvmm] [--image build/guest/testguest.bzImage]
"""
import argparse
import os
import re
import select
import statistics
import subprocess
import sys
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E402
from timing_host import refuse_emulated_timing  # noqa: E402

CMDLINE = "console=ttyS0 reboot=k panic=-1 acpi=off test=boot"
READY = re.compile(rb"tg: ready cpus=(\d+)")


def vvmm_cmd(args, cpus, mem="256M", test="test=boot"):
    return [args.vvmm, "run", "--kernel", args.image, "--cpus", str(cpus), "--mem", mem, "--cmdline", test]


def qemu_cmd(args, machine, cpus, mem="256M"):
    m = "microvm,x-option-roms=off,rtc=off,acpi=off" if machine == "microvm" else "pc"
    # arch-capabilities=off: this host's KVM refuses QEMU's default for that MSR.
    return ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,arch-capabilities=off", "-M", m,
            "-smp", str(cpus), "-m", mem, "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-serial", "stdio", "-kernel", args.image, "-append", CMDLINE]


def time_boot(cmd, cpus, timeout=60):
    """Seconds from exec to the ready line and to process exit."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, ready = b"", None
    fd = p.stdout.fileno()
    while True:
        r, _, _ = select.select([fd], [], [], max(0.0, timeout - (time.monotonic() - start)))
        if not r:
            p.kill()
            raise RuntimeError("timeout: %s\n%s" % (" ".join(cmd), out[-2000:].decode(errors="replace")))
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
        if ready is None:
            m = READY.search(out)
            if m:
                ready = time.monotonic() - start
                if int(m.group(1)) != cpus:
                    raise RuntimeError("guest saw %s CPUs, wanted %d" % (m.group(1), cpus))
    status = p.wait()
    end = time.monotonic() - start
    if ready is None or status != 0 or b"tg: boot ok" not in out:
        raise RuntimeError("boot failed (status %s): %s\n%s%s" % (status, " ".join(cmd), out[-2000:].decode(errors="replace"),
                                                             p.stderr.read().decode(errors="replace")))
    return ready, end


def rss_overhead(args):
    """Boot an idle guest (test=shell), then read vvmm's memory counters:
    overhead = peak RSS - guest RAM it touched (the memfd shows as RssShmem)."""
    p = subprocess.Popen(vvmm_cmd(args, 1, "256M", "test=shell"), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = b""
    while b"tg: shell" not in out:
        chunk = os.read(p.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError("vvmm exited before the shell prompt")
        out += chunk
    time.sleep(0.3)
    fields = {}
    with open("/proc/%d/status" % p.pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if v.strip().endswith("kB"):
                fields[k] = int(v.split()[0])
    p.stdin.write(b"reboot\r")
    p.stdin.flush()
    p.wait(30)
    return fields["VmHWM"], fields["RssShmem"]


def qemu_rss(args):
    """QEMU's guest RAM is anonymous memory, so only its total peak RSS is comparable."""
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M"] + qemu_cmd(args, "microvm", 1), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.communicate(timeout=60)[1].decode()
    return int(err.strip().split("\n")[-1])


def main():
    refuse_emulated_timing("bench/boot.py")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--vvmm", default="build/vvmm")
    ap.add_argument("--image", default="build/guest/testguest.bzImage")
    args = ap.parse_args()

    print("boot of %s (test=boot), medians of %d runs, milliseconds" % (args.image, args.runs))
    print("%-14s %5s %10s %10s" % ("vmm", "vcpus", "to ready", "to exit"))
    results = {}
    for cpus in (1, 2):
        for name, cmd in (("vvmm", vvmm_cmd(args, cpus)), ("qemu microvm", qemu_cmd(args, "microvm", cpus)),
                          ("qemu pc", qemu_cmd(args, "pc", cpus))):
            samples = [time_boot(cmd, cpus) for _ in range(args.runs)]
            ready = statistics.median(s[0] for s in samples) * 1000
            end = statistics.median(s[1] for s in samples) * 1000
            results[(name, cpus)] = (ready, end)
            print("%-14s %5d %10.1f %10.1f" % (name, cpus, ready, end))
    print()
    for cpus in (1, 2):
        v = results[("vvmm", cpus)]
        fastest = min((results[(q, cpus)] for q in ("qemu microvm", "qemu pc")), key=lambda r: r[0])
        print("%d vCPU: vvmm/fastest-QEMU  to-ready %.2fx   to-exit %.2fx   (goal: to-ready <= 0.5x)"
              % (cpus, v[0] / fastest[0], v[1] / fastest[1]))
    hwm, shmem = rss_overhead(args)
    print()
    print("vvmm peak RSS %.1f MiB, guest memory touched %.1f MiB, VMM overhead %.1f MiB (goal <= 8 MiB)"
          % (hwm / 1024, shmem / 1024, (hwm - shmem) / 1024))
    print("qemu microvm peak RSS %.1f MiB (guest memory not separable)" % (qemu_rss(args) / 1024))


if __name__ == "__main__":
    sys.exit(main())
