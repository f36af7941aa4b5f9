#!/usr/bin/env python3
"""bench/net: VM<->VM Ethernet throughput (1514-byte frames, one sender, one
receiver) and round-trip latency (60-byte ping/pong) between two test guests:
vvmm's peer mesh vs two QEMU/KVM processes joined by `-netdev socket`, same
guest image and workload, medians of --runs runs, ratios vvmm/QEMU.
Goals: throughput >= 2x QEMU's socket netdev, round-trip no worse.

    bench/net.py [--runs 3] [--secs 5] [--before REV]

--before REV also runs a vvmm built from git revision REV in the same run
(for the cost of the peer channel's TLS: --before f621d8f^, the last
revision with plain TCP), built once into a cached worktree under $TMPDIR,
and prints this vvmm's figures over REV's.
"""
import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E402
from timing_host import refuse_emulated_timing  # noqa: E402

MACS = ("52:54:00:00:20:01", "52:54:00:00:20:02")
CMDLINE = "console=ttyS0 reboot=k panic=-1 acpi=off"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def build_revision(rev):
    """vvmm built from git revision `rev`, in a worktree kept for later runs."""
    def git(*a):
        return subprocess.run(["git"] + list(a), check=True, capture_output=True, text=True).stdout.strip()
    sha = git("rev-parse", "--verify", rev + "^{commit}")
    tree = os.path.join(tempfile.gettempdir(), "vvmm-bench-" + sha[:12])
    exe = os.path.join(tree, "build", "vvmm")
    if not os.path.exists(exe):
        if not os.path.isdir(tree):
            git("worktree", "add", "--detach", tree, sha)
        print("building vvmm at %s (%s) in %s" % (rev, sha[:12], tree), flush=True)
        if not os.path.exists(os.path.join(tree, "build", "build.ninja")):
            subprocess.run(["meson", "setup", "build"], cwd=tree, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["ninja", "-C", "build", "vvmm"], cwd=tree, check=True, stdout=subprocess.DEVNULL)
    return exe


def vvmm_pair_with(exe):
    def pair(args, workloads):
        return vvmm_pair(args, workloads, exe)
    return pair


def vvmm_pair(args, workloads, exe=None):
    p0, p1 = free_port(), free_port()
    cmds = []
    for i, (me, listen, peer) in enumerate(((MACS[0], p0, p1), (MACS[1], p1, p0))):
        net = "peer,id=b%d,listen=127.0.0.1:%d,peers=127.0.0.1:%d,mac=%s" % (i, listen, peer, me)
        cmds.append([exe or args.vvmm, "run", "--kernel", args.image, "--mem", "256M", "--net", net, "--cmdline", workloads[i]])
    return cmds


def qemu_pair(args, workloads):
    port = free_port()
    cmds = []
    for i, netdev in enumerate(("socket,id=n0,listen=127.0.0.1:%d" % port, "socket,id=n0,connect=127.0.0.1:%d" % port)):
        cmds.append(["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,arch-capabilities=off", "-M", "pc", "-m", "256M",
                     "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
                     "-kernel", args.image, "-append", CMDLINE + " " + workloads[i],
                     "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,disable-legacy=on,mac=" + MACS[i]])
    return cmds


def run_pair(cmds, timeout):
    procs = []
    for c in cmds:
        procs.append(subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, errors="replace"))
        if "listen" in " ".join(c):
            import time
            time.sleep(0.3)  # QEMU's socket listener must be up before the other connects
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise RuntimeError("timeout:\n" + " ".join(cmds[0]))
        if p.returncode != 0 or "netbench fail" in out:
            raise RuntimeError("failed (%s): %s\n%s\n%s" % (p.returncode, " ".join(p.args), out[-1500:], err[-800:]))
        outs.append(out)
    return outs


def throughput(args, pair):
    wl = ["test=netbench role=send secs=%d me=%s peer=%s" % (args.secs, MACS[0], MACS[1]),
          "test=netbench role=recv secs=%d me=%s peer=%s" % (args.secs, MACS[1], MACS[0])]
    outs = run_pair(pair(args, wl), 120 + args.secs)
    m = re.search(r"tg: netbench role=recv frames=(\d+) mbps=([\d.]+) fps=(\d+) lost=(-?\d+)", outs[1])
    if not m or int(m.group(4)) != 0:
        raise RuntimeError("receiver: %s" % outs[1][-1500:])
    return float(m.group(2)), int(m.group(3))


def latency(args, pair):
    wl = ["test=netbench role=ping secs=%d me=%s peer=%s" % (args.secs, MACS[0], MACS[1]),
          "test=netbench role=pong secs=%d me=%s peer=%s" % (args.secs, MACS[1], MACS[0])]
    outs = run_pair(pair(args, wl), 120 + args.secs)
    m = re.search(r"tg: netbench rtt_us_median=(\d+) rtt_us_p99=(\d+)", outs[0])
    if not m:
        raise RuntimeError("ping: %s" % outs[0][-1500:])
    return int(m.group(1)), int(m.group(2))


def main():
    refuse_emulated_timing("bench/net.py")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--vvmm", default="build/vvmm")
    ap.add_argument("--image", default="build/guest/testguest.bzImage")
    ap.add_argument("--before", metavar="REV", help="also run vvmm built from this git revision (e.g. f621d8f^, before TLS)")
    args = ap.parse_args()
    pairs = [("vvmm", vvmm_pair), ("qemu socket", qemu_pair)]
    if args.before:
        pairs.insert(1, ("vvmm " + args.before, vvmm_pair_with(os.path.abspath(build_revision(args.before)))))
    res = {}
    for name, pair in pairs:
        tp = [throughput(args, pair) for _ in range(args.runs)]
        lat = [latency(args, pair) for _ in range(args.runs)]
        res[name] = (statistics.median(t[0] for t in tp), statistics.median(t[1] for t in tp),
                     statistics.median(l[0] for l in lat), statistics.median(l[1] for l in lat))
    print("VM<->VM, medians of %d runs of %d s" % (args.runs, args.secs))
    width = max(len(n) for n in res)
    print("%-*s %10s %10s %12s %12s" % (width, "", "MB/s", "frames/s", "rtt med us", "rtt p99 us"))
    for name, (mbps, fps, med, p99) in res.items():
        print("%-*s %10.1f %10d %12d %12d" % (width, name, mbps, fps, med, p99))
    v, q = res["vvmm"], res["qemu socket"]
    print("throughput vvmm/QEMU %.2fx (goal >= 2x); round-trip median vvmm/QEMU %.2fx (goal <= 1x)"
          % (v[0] / q[0], v[2] / q[2] if q[2] else float("inf")))
    if args.before:
        b = res["vvmm " + args.before]
        print("this vvmm / vvmm %s: throughput %.2fx, round-trip median %.2fx"
              % (args.before, v[0] / b[0], v[2] / b[2] if b[2] else float("inf")))


if __name__ == "__main__":
    sys.exit(main())
