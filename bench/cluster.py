#!/usr/bin/env python3
"""bench/cluster: coordinated checkpoints of a cluster, vvmm vs QEMU/KVM, on
the same test guest and workload: N VMs (default 4 x 512 MiB) running
`test=ring work=K` (every VM streams numbered messages to every other and
does K rounds of computation per message sent: compute plus communication).

The cost of one checkpoint on this noisy 2-core machine is far below the run
to run spread of the message rate, so the slowdown is measured in pairs of
windows inside one running cluster: --window seconds without checkpoints,
then --window seconds with a checkpoint every --every seconds, --pairs times.
The messages lost per checkpoint, (rate without - rate with) x window /
checkpoints, give the slowdown for a checkpoint every --interval (30) seconds:
lost per checkpoint / (rate without x interval). Medians over the pairs.
  vvmm: `checkpoint --all` (cow; all but the first incremental): per-VM pause,
        epoch time, the slowest VM's own checkpoint time (epoch / slowest =
        the coordination overhead), bytes, and the slowdown;
  QEMU: -M pc, the VMs on netswitch.py, the guests' own virtio-net driver,
        and the stop-the-world equivalent of a cluster checkpoint: QMP stop on
        every VM, migrate each to a file (in parallel), cont every VM.
Ratios are vvmm/QEMU.

Every VM runs on its own node (node i at 127.0.0.(i+1), one `vvmm run --node`
each), so a diskless cluster's parity crosses the peer channel as it would
between hosts. With --storage both, vvmm runs once with checkpoints on disk
(checkpoint_dir in /var/tmp) and once per --redundancy with them in memory
(storage = "memory", memory_dir in /dev/shm, sets of nodes - K VMs); for
each it prints the bytes of parity changes sent per epoch against the bytes
the VMs' checkpoints wrote (the dirty pages; goal: incremental epochs send
each holder <= 1.2x those), the checkpoint memory per node, and the
memory/disk ratios (goal: a diskless epoch usable in <= 0.3x the disk
epoch's time). --sizes-only takes --pairs x 3 checkpoints and reports only
bytes and memory: those mean something even in the test host VM, where
timing does not.

    bench/cluster.py [--vms 4] [--mem 512M] [--work 2000] [--pairs 5] [--window 12]
                     [--every 3] [--interval 30] [--mode cow] [--storage disk|memory|both]
                     [--redundancy xor,rs:2] [--sizes-only] [--no-qemu] [--json OUT]
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ckpt import HugePages  # noqa: E402
from qmp import QMP  # noqa: E402
from timing_host import refuse_emulated_timing  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RX = re.compile(r"tg: ring rx from=(\d+) n=(\d+)")
PROCS = []


def mac(i):
    return "52:54:00:bb:00:%02x" % (i + 1)


def cmdline(args, i):
    return "test=ring me=%d n=%d msix=1 irqwait=500 work=%d report=%d" % (i, args.vms, args.work, args.report)


def progress(texts):
    """Messages received so far, over all VMs and streams (from the reports)."""
    total = 0
    for text in texts:
        best = {}
        for m in RX.finditer(text):
            best[m.group(1)] = max(best.get(m.group(1), 0), int(m.group(2)))
        total += sum(best.values())
    return total


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def kill_all():
    for p in PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    PROCS.clear()


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def measure(args, texts, checkpoint):
    """Warm up, then pairs of windows: without checkpoints, with one every args.every s."""
    wait_for(lambda: progress(texts()) > 0, 120 * (10 if args.sizes_only else 1), "no ring traffic")
    time.sleep(args.warmup)
    pairs, epochs = [], []
    if args.sizes_only:
        for n in range(3 * args.pairs):
            epochs.append(checkpoint(n))
            time.sleep(args.every)
        return {"pairs": pairs, "epochs": epochs}
    for _ in range(args.pairs):
        t0, m0 = time.monotonic(), progress(texts())
        time.sleep(args.window)
        t1, m1 = time.monotonic(), progress(texts())
        n, next_ckpt = 0, t1
        while time.monotonic() < t1 + args.window:
            if time.monotonic() >= next_ckpt:
                epochs.append(checkpoint(len(epochs)))
                n += 1
                next_ckpt += args.every
            time.sleep(0.02)
        t2, m2 = time.monotonic(), progress(texts())
        if m1 <= m0 or m2 <= m1:
            raise RuntimeError("the workload made no progress")
        without, with_ = (m1 - m0) / (t1 - t0), (m2 - m1) / (t2 - t1)
        lost = (without - with_) * (t2 - t1) / n
        pairs.append({"without": without, "with": with_, "checkpoints": n, "lost_per_checkpoint": lost,
                      "slowdown_pct": 100 * lost / (without * args.interval)})
    return {"pairs": pairs, "epochs": epochs}


# ---------------------------------------------------------------- vvmm

def parity_blocks_per_set(redundancy):
    """K: the parity blocks of each set, so the holders each VM sends its changes to."""
    if redundancy in ("none", None):
        return 0
    return int(redundancy[3:]) if redundancy.startswith("rs:") else 1


def vvmm_config(args, work, storage, redundancy, memory_dir):
    ckpt = os.path.join(work, "ckpt")
    shutil.rmtree(ckpt, ignore_errors=True)
    if storage == "disk":
        where = 'checkpoint_dir = "%s"' % ckpt
    else:
        k = parity_blocks_per_set(redundancy)
        where = 'storage = "memory"\nmemory_dir = "%s"\nredundancy = "%s"' % (memory_dir, redundancy)
        if k:
            where += "\nset_size = %d" % max(1, args.vms - k)
    key = os.path.join(work, "bench.key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(key, 0o600)
    cfg = os.path.join(work, "cluster.toml")
    with open(cfg, "w") as f:
        f.write('[cluster]\nname = "bench"\nsecret_file = "%s"\n%s\nmode = "%s"\n' % (key, where, args.mode))
        for i in range(args.vms):
            f.write('\n[[node]]\nname = "n%d"\naddress = "127.0.0.%d"\n' % (i, i + 1))
        for i in range(args.vms):
            f.write('\n[[vm]]\nname = "vm%d"\nnode = "n%d"\nport = %d\nmem = "%s"\nkernel = "%s"\ncmdline = "%s"\n'
                    'mac = "%s"\nhuge_pages = %s\n' % (i, i, args.port + i, args.mem, args.image, cmdline(args, i),
                                                      mac(i), "true" if args.huge_pages else "false"))
    return cfg


def tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def vvmm_run(args, work, storage="disk", redundancy=None):
    memory_dir = "/dev/shm/vvmm-bench-cluster-%d" % os.getpid()
    shutil.rmtree(memory_dir, ignore_errors=True)
    cfg = vvmm_config(args, work, storage, redundancy, memory_dir)
    k = parity_blocks_per_set(redundancy) if storage == "memory" else 0
    outs = []
    for i in range(args.vms):
        out = os.path.join(work, "vvmm-n%d.out" % i)
        outs.append(out)
        with open(out, "w") as o:
            PROCS.append(subprocess.Popen([args.vvmm, "run", "--cluster", cfg, "--node", "n%d" % i],
                                          stdin=subprocess.DEVNULL, stdout=o, stderr=subprocess.STDOUT,
                                          start_new_session=True))

    def texts():
        per_vm = {}
        for line in "".join(read(o) for o in outs).splitlines():
            m = re.match(r"(vm\d+)\s*\| (.*)", line)
            if m:
                per_vm.setdefault(m.group(1), []).append(m.group(2))
        return ["\n".join(v) for v in per_vm.values()]

    def checkpoint(n):
        argv = [args.vvmm, "checkpoint", "--all", "--cluster", cfg, "--mode", args.mode, "--json"]
        if n > 0:
            argv.append("--incremental")
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        reply = json.loads(r.stdout) if r.stdout.strip() else {}
        if r.returncode != 0 or not reply.get("ok"):
            raise RuntimeError("checkpoint --all failed: %s %s" % (r.stdout, r.stderr))
        vms = reply["vms"]
        return {"epoch_ms": reply["epoch_ms"], "max_pause_ms": max(v["pause_ms"] for v in vms),
                "pauses_ms": [v["pause_ms"] for v in vms], "slowest_vm_ms": max(v["total_ms"] for v in vms),
                "bytes": sum(v["bytes"] for v in vms), "incremental": n > 0,
                "parity_to_each_holder": sum(v.get("parity_bytes", 0) for v in vms),
                "network_bytes": k * sum(v.get("parity_bytes", 0) for v in vms)}

    try:
        r = measure(args, texts, checkpoint)
        if storage == "memory":
            r["memory_per_node"] = [tree_bytes(os.path.join(memory_dir, "n%d" % i)) for i in range(args.vms)]
        return r
    finally:
        kill_all()
        shutil.rmtree(memory_dir, ignore_errors=True)
        text = "".join(read(o) for o in outs)
        if "ring error" in text or "ring fail" in text:
            raise RuntimeError("the ring workload failed under vvmm:\n" + text[-2000:])


# ---------------------------------------------------------------- QEMU

def qemu_run(args, work):
    sw_path = os.path.join(work, "sw.sock")
    if os.path.exists(sw_path):
        os.unlink(sw_path)
    PROCS.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "guest-images/testguest/netswitch.py"), sw_path,
                                   "--ports", str(args.vms), "--timeout", str(args.pairs * args.window * 2 + 600)],
                                  stderr=subprocess.DEVNULL, start_new_session=True))
    wait_for(lambda: os.path.exists(sw_path), 10, "netswitch did not start")
    macs = ",".join(mac(i) for i in range(args.vms))
    logs, socks = [], []
    for i in range(args.vms):
        log, sock = os.path.join(work, "q%d.log" % i), os.path.join(work, "q%d.sock" % i)
        for f in (log, sock):
            if os.path.exists(f):
                os.unlink(f)
        logs.append(log)
        socks.append(sock)
        append = "console=ttyS0 reboot=k panic=-1 acpi=off %s vvmm.macs=%s" % (cmdline(args, i), macs)
        PROCS.append(subprocess.Popen(
            ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,arch-capabilities=off", "-M", "pc", "-m", args.mem,
             "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
             "-serial", "file:" + log, "-qmp", "unix:%s,server=on,wait=off" % sock, "-kernel", args.image,
             "-append", append, "-netdev", "stream,id=n0,server=off,addr.type=unix,addr.path=" + sw_path,
             "-device", "virtio-net-pci,netdev=n0,disable-legacy=on,mac=" + mac(i)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    wait_for(lambda: all(os.path.exists(s) for s in socks), 30, "QEMU did not start")
    qmps = [QMP(s) for s in socks]

    def checkpoint(k):
        # Stop the world, save every VM (in parallel), resume every VM.
        t0 = time.monotonic()
        for q in qmps:
            q.execute("stop")
        sizes, errors = [0] * len(qmps), []

        def save(i):  # one thread per VM, each with its own QMP connection
            path = os.path.join(work, "q%d.state" % i)
            try:
                qmps[i].execute("migrate", uri="exec:cat > " + path)
                while True:
                    info = qmps[i].execute("query-migrate")
                    if info.get("status") == "completed":
                        break
                    if info.get("status") in ("failed", "cancelled"):
                        raise RuntimeError(str(info))
                    time.sleep(0.001)
                fd = os.open(path, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
                sizes[i] = os.path.getsize(path)
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.append(e)

        threads = [threading.Thread(target=save, args=(i,)) for i in range(len(qmps))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for q in qmps:
            q.execute("cont")
        ms = (time.monotonic() - t0) * 1000
        if errors:
            raise RuntimeError("QEMU save failed: %s" % errors[0])
        return {"epoch_ms": ms, "max_pause_ms": ms, "pauses_ms": [ms] * len(qmps), "slowest_vm_ms": ms,
                "bytes": sum(sizes), "incremental": False}

    try:
        return measure(args, lambda: [read(l) for l in logs], checkpoint)
    finally:
        for q in qmps:
            try:
                q.close()
            except Exception:  # noqa: BLE001
                pass
        kill_all()
        text = "".join(read(l) for l in logs)
        if "ring error" in text or "ring fail" in text:
            raise RuntimeError("the ring workload failed under QEMU:\n" + text[-2000:])


# ---------------------------------------------------------------- report

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(r):
    epochs, pairs = r["epochs"], r["pairs"]
    return {"rate": med([p["without"] for p in pairs]), "epochs": len(epochs),
            "lost_per_checkpoint": med([p["lost_per_checkpoint"] for p in pairs]),
            "slowdown_pct": med([p["slowdown_pct"] for p in pairs]),
            "slowdown_pcts": [round(p["slowdown_pct"], 3) for p in pairs],
            "epoch_ms": med([e["epoch_ms"] for e in epochs]),
            "max_pause_ms": med([e["max_pause_ms"] for e in epochs]),
            "all_pauses_ms": med([p for e in epochs for p in e["pauses_ms"]]),
            "p90_pause_ms": sorted([p for e in epochs for p in e["pauses_ms"]])[int(0.9 * sum(len(e["pauses_ms"]) for e in epochs))],
            "slowest_vm_ms": med([e["slowest_vm_ms"] for e in epochs]),
            "coordination": med([e["epoch_ms"] / e["slowest_vm_ms"] for e in epochs if e["slowest_vm_ms"] > 0]),
            "full_mib": med([e["bytes"] / 2**20 for e in epochs if not e["incremental"]]),
            "incremental_mib": med([e["bytes"] / 2**20 for e in epochs if e["incremental"]]),
            "network_full_mib": med([e.get("network_bytes", 0) / 2**20 for e in epochs if not e["incremental"]]),
            "network_incremental_mib": med([e.get("network_bytes", 0) / 2**20 for e in epochs if e["incremental"]]),
            "to_each_holder_vs_written": med([e.get("parity_to_each_holder", 0) / e["bytes"] for e in epochs
                                              if e["incremental"] and e["bytes"]]),
            "memory_per_node_mib": max(r.get("memory_per_node", [0])) / 2**20}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vms", type=int, default=4)
    ap.add_argument("--mem", default="512M")
    ap.add_argument("--work", type=int, default=2000, help="splitmix64 rounds per message sent")
    ap.add_argument("--report", type=int, default=200)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--window", type=float, default=12)
    ap.add_argument("--every", type=float, default=3, help="seconds between checkpoints in a measuring window")
    ap.add_argument("--interval", type=float, default=30, help="the checkpoint interval the slowdown is given for")
    ap.add_argument("--mode", default="cow", choices=["stop", "live", "cow"])
    ap.add_argument("--port", type=int, default=7400)
    ap.add_argument("--storage", default="disk", choices=["disk", "memory", "both"],
                    help="where vvmm's checkpoints go; both: one run each, and memory/disk ratios")
    ap.add_argument("--redundancy", default="xor,rs:2",
                    help="for storage memory: comma-separated redundancies, one vvmm run each (none, xor, rs:K)")
    ap.add_argument("--sizes-only", action="store_true",
                    help="only bytes and memory (no timing, no QEMU): allowed in the test host VM")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--huge-pages", action="store_true", help="vvmm VMs on 2 MiB pages (reserves them; needs root)")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--vvmm", default=os.path.join(ROOT, "build/vvmm"))
    ap.add_argument("--image", default=os.path.join(ROOT, "build/guest/testguest.bzImage"))
    args = ap.parse_args()
    if args.sizes_only:
        args.no_qemu = True
    else:
        refuse_emulated_timing("bench/cluster.py")
    memory_runs = ["vvmm-" + r for r in args.redundancy.split(",")]
    work = tempfile.mkdtemp(prefix="vvmm-bench-cluster-", dir="/var/tmp")
    results = {}
    huge = HugePages()
    if args.huge_pages:
        problem = huge.reserve(args.vms * int(args.mem[:-1]) * (1024 if args.mem[-1] in "gG" else 1) // 2 + 16)
        if problem:
            sys.exit("bench/cluster: " + problem)
    try:
        runs = {"disk": ["vvmm"], "memory": memory_runs, "both": ["vvmm"] + memory_runs}[args.storage]
        for vmm in runs + ([] if args.no_qemu else ["qemu"]):
            if vmm == "qemu":
                r = qemu_run(args, work)
            elif vmm == "vvmm":
                r = vvmm_run(args, work, "disk")
            else:
                r = vvmm_run(args, work, "memory", vmm[len("vvmm-"):])
            results[vmm] = r
            for p in r["pairs"]:
                print("%s: %.0f msg/s without, %.0f with %d checkpoints: %.1f messages lost per checkpoint" % (
                    vmm, p["without"], p["with"], p["checkpoints"], p["lost_per_checkpoint"]), flush=True)
    finally:
        kill_all()
        huge.restore()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    s = {k: summarize(v) for k, v in results.items()}
    shape = "%d VMs x %s%s on %d nodes, test=ring work=%d, %s mode" % (
        args.vms, args.mem, " (vvmm on huge pages)" if args.huge_pages else "", args.vms, args.work, args.mode)
    if args.sizes_only:
        print("\n%s; %d checkpoints %gs apart (sizes only)" % (shape, 3 * args.pairs, args.every))
    else:
        print("\n%s; %d pairs of %gs windows (checkpoint every %gs in the second)"
              % (shape, args.pairs, args.window, args.every))
    for vmm, r in s.items():
        if not args.sizes_only:
            print("%-11s %.0f msg/s; %.1f messages lost per checkpoint = slowdown %.2f%% with a checkpoint every %gs "
                  "(per pair: %s)" % (vmm, r["rate"], r["lost_per_checkpoint"], r["slowdown_pct"], args.interval,
                                      r["slowdown_pcts"]))
            print("      %d epochs: epoch %.1f ms, slowest VM %.1f ms (epoch/slowest %.2fx), per-VM pause median %.1f ms, "
                  "p90 %.1f ms, max per epoch %.1f ms" % (r["epochs"], r["epoch_ms"], r["slowest_vm_ms"], r["coordination"],
                                                          r["all_pauses_ms"], r["p90_pause_ms"], r["max_pause_ms"]))
        print("%-11s %d epochs: checkpoints wrote full %.1f MiB, incremental %.2f MiB" % (
            vmm, r["epochs"], r["full_mib"], r["incremental_mib"]))
        if vmm.startswith("vvmm-") and not vmm.endswith("-none"):
            print("      parity on the network: full %.1f MiB, incremental %.2f MiB; each holder gets %.2fx the bytes "
                  "the incremental checkpoints wrote (goal <= 1.2x); checkpoint memory per node at most %.1f MiB"
                  % (r["network_full_mib"], r["network_incremental_mib"], r["to_each_holder_vs_written"],
                     r["memory_per_node_mib"]))
        elif vmm.startswith("vvmm-"):
            print("      checkpoint memory per node at most %.1f MiB" % r["memory_per_node_mib"])
    for m in [k for k in s if k.startswith("vvmm-")] if "vvmm" in s and not args.sizes_only else []:
        d, mm = s["vvmm"], s[m]
        print("ratios %s/disk: epoch time %.3fx (goal <= 0.3x), per-VM pause %.3fx, slowdown %.3fx"
              % (m[len("vvmm-"):], mm["epoch_ms"] / d["epoch_ms"], mm["all_pauses_ms"] / d["all_pauses_ms"],
                 mm["slowdown_pct"] / d["slowdown_pct"] if d["slowdown_pct"] else float("nan")))
    if "qemu" in s and "vvmm" in s:
        v, q = s["vvmm"], s["qemu"]
        print("ratios vvmm/QEMU: rate %.2fx, epoch time %.3fx, per-VM pause %.3fx, slowdown %.3fx"
              % (v["rate"] / q["rate"], v["epoch_ms"] / q["epoch_ms"], v["all_pauses_ms"] / q["all_pauses_ms"],
                 v["slowdown_pct"] / q["slowdown_pct"] if q["slowdown_pct"] else float("nan")))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": s, "raw": results}, f, indent=1)


if __name__ == "__main__":
    main()
