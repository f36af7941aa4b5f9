#!/usr/bin/env python3
"""bench/blk: the test guest's disk throughput (sequential 1 MiB and random
4 KiB reads and writes, queue depth 16) on vvmm vs QEMU/KVM with virtio-blk
(aio=io_uring) on the same guest image and the same raw disk image file;
medians of --runs runs per pattern, ratio vvmm/QEMU (goal: >= 1 on every pattern).

    bench/blk.py [--runs 3] [--mb 256] [--secs 3]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E402
from timing_host import refuse_emulated_timing  # noqa: E402

LINE = re.compile(r"tg: blkbench pattern=(\w+) bs=(\d+) iops=(\d+) mbps=([\d.]+)")
CMDLINE = "console=ttyS0 reboot=k panic=-1 acpi=off"


def run(cmd, timeout=600):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=timeout)
    results = {m.group(1): float(m.group(4)) for m in LINE.finditer(p.stdout)}
    if p.returncode != 0 or len(results) < 4:
        raise RuntimeError("run failed (%s): %s\n%s\n%s" % (p.returncode, " ".join(cmd), p.stdout[-2000:], p.stderr[-1000:]))
    return results


def main():
    refuse_emulated_timing("bench/blk.py")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--secs", type=int, default=3)
    ap.add_argument("--vvmm", default="build/vvmm")
    ap.add_argument("--image", default="build/guest/testguest.bzImage")
    args = ap.parse_args()
    workload = "test=blkbench mb=%d secs=%d qd=16" % (args.mb, args.secs)
    disk = os.path.join(tempfile.mkdtemp(prefix="vvmm-blkbench-"), "disk.img")
    with open(disk, "wb") as f:
        f.truncate((args.mb + 16) << 20)
    vvmm = [args.vvmm, "run", "--kernel", args.image, "--mem", "512M", "--cmdline", workload, "--disk", "path=" + disk]
    def qemu(cache):
        return ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,arch-capabilities=off", "-M", "pc", "-m", "512M",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio", "-kernel", args.image,
            "-append", CMDLINE + " " + workload,
                "-drive", "if=none,id=d0,file=%s,format=raw,cache=%s,aio=io_uring" % (disk, cache),
                "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]
    # vvmm does buffered I/O (the host page cache), so QEMU runs both with its
    # default writeback cache and with cache=none; the ratio uses QEMU's better one.
    configs = {"vvmm": vvmm, "qemu cache=none": qemu("none"), "qemu writeback": qemu("writeback")}
    samples = {name: [] for name in configs}
    for _ in range(args.runs):
        for name, cmd in configs.items():
            samples[name].append(run(cmd))
    print("disk throughput, MB/s, medians of %d runs (%s)" % (args.runs, workload))
    print("%-10s %10s %16s %16s %8s" % ("pattern", "vvmm", "qemu cache=none", "qemu writeback", "ratio"))
    worst = None
    for pattern in ("seqread", "seqwrite", "randread", "randwrite"):
        med = {name: statistics.median(s[pattern] for s in runs) for name, runs in samples.items()}
        best_qemu = max(med["qemu cache=none"], med["qemu writeback"])
        ratio = med["vvmm"] / best_qemu if best_qemu else float("inf")
        worst = ratio if worst is None else min(worst, ratio)
        print("%-10s %10.1f %16.1f %16.1f %7.2fx" % (pattern, med["vvmm"], med["qemu cache=none"], med["qemu writeback"], ratio))
    print("worst ratio vs QEMU's better mode %.2fx (goal >= 1.00x on every pattern)" % worst)
    os.unlink(disk)


if __name__ == "__main__":
    sys.exit(main())
