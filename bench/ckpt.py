#!/usr/bin/env python3
"""bench/ckpt: checkpoint and restore of one VM, vvmm vs QEMU/KVM, on the same
test guest running `test=dirty` (it rewrites `rate` MiB of a `fill` MiB area
per step and prints the longest stall it saw inside each step).

Per guest size (fill = 88% of RAM, rate 64 MiB) and mode, medians of --runs:
  vvmm (and vvmm --huge-pages if 2 MiB pages can be reserved), modes stop,
  live, cow: pause, total, bytes written, longest copy-on-write stall, the
  guest-observed longest stall, an incremental checkpoint of the same mode
  ~3 steps later (bytes vs what the guest dirtied), restore after kill -9
  (restore_ms inside vvmm, and wall time until the restored guest's next step).
  QEMU 7.2 (-M microvm, QMP): stop + migrate to a file, live (precopy)
  migrate, background-snapshot migrate (the cow equivalent), and restore with
  -incoming; ratios vvmm/QEMU per metric.
  The disk's O_DIRECT write bandwidth, to judge stop-mode total time.

    bench/ckpt.py [--sizes 512M,2G] [--runs 3] [--modes stop,live,cow] [--no-qemu]
                  [--no-huge] [--quick] [--json OUT]
Needs root for --huge-pages (it raises /proc/sys/vm/nr_hugepages while it
runs and puts the old value back).
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
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import QMP, QMPError  # noqa: E402
from timing_host import refuse_emulated_timing  # noqa: E402

CMDLINE = "console=ttyS0 reboot=k panic=-1 acpi=off"
DIRTY = re.compile(rb"tg: dirty n=(\d+) mb=(\d+) step_us=(\d+) maxgap_us=(\d+)\r?\n")
RATE = 64
MIB = 1 << 20
QEMU_MODE = {"stop": "stop", "live": "live", "cow": "background-snapshot"}
PROCS = []  # every child we started, killed in the finally of main()


class Log:
    """Follows a guest console file; lines = [(host time first seen, n, maxgap_us)]."""

    def __init__(self, path):
        self.path, self.pos, self.partial, self.lines, self.f = path, 0, b"", [], None

    def poll(self):
        if self.f is None:
            try:
                self.f = open(self.path, "rb")
            except FileNotFoundError:
                return
        data = self.f.read()
        if not data:
            return
        now = time.monotonic()
        buf = self.partial + data
        cut = buf.rfind(b"\n") + 1
        self.partial = buf[cut:]
        for m in DIRTY.finditer(buf[:cut]):
            self.lines.append((now, int(m.group(1)), int(m.group(4))))
        if b"tg: error" in buf[:cut] or b"tg: panic" in buf[:cut]:
            raise RuntimeError("guest error in %s: %s" % (self.path, buf[:cut].decode(errors="replace")[-500:]))

    def last_n(self):
        self.poll()
        return self.lines[-1][1] if self.lines else 0

    def wait(self, pred, timeout, what, proc=None):
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if pred(self.lines):
                return
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("%s: process exited (%s) while waiting for %s" % (self.path, proc.returncode, what))
            if time.monotonic() > deadline:
                raise RuntimeError("timeout waiting for %s in %s" % (what, self.path))
            time.sleep(0.0005)

    def max_gap_ms(self, since_index):
        gaps = [g for _, _, g in self.lines[since_index:]]
        return max(gaps) / 1000 if gaps else None

    def close(self):
        if self.f:
            self.f.close()


def spawn(cmd, errpath):
    """Starts a child with stderr in errpath (a pipe nobody reads could block it)."""
    with open(errpath, "wb") as err:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    p.errpath = errpath
    PROCS.append(p)
    return p


def reap(p, sig=signal.SIGKILL):
    if p.poll() is None:
        p.send_signal(sig)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    if p in PROCS:
        PROCS.remove(p)


def stderr_of(p):
    try:
        with open(p.errpath, "rb") as f:
            return f.read().decode(errors="replace")[-1500:]
    except OSError:
        return ""


def parse_size(s):
    s = s.strip().upper()
    mult = {"M": 1, "G": 1024}[s[-1]]
    return int(float(s[:-1]) * mult)


# ---------------------------------------------------------------- vvmm

def vvmm_cli(args, *argv):
    r = subprocess.run([args.vvmm] + list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("%s %s -> %d: %s" % (args.vvmm, " ".join(argv), r.returncode, (r.stderr + r.stdout)[-1500:]))
    return json.loads(r.stdout) if "--json" in argv else r.stdout


def vvmm_once(args, work, mib, fill, mode, huge):
    d, log1, log2 = os.path.join(work, "ck"), os.path.join(work, "run.log"), os.path.join(work, "restore.log")
    sock1, sock2 = os.path.join(work, "run.sock"), os.path.join(work, "restore.sock")
    for f in (log1, log2, sock1, sock2):
        if os.path.exists(f):
            os.unlink(f)
    os.makedirs(d, exist_ok=True)
    cmd = [args.vvmm, "run", "--kernel", args.image, "--mem", "%dM" % mib, "--cmdline",
           "test=dirty fill=%d rate=%d" % (fill, RATE), "--console", "file:" + log1, "--api", sock1,
           "--checkpoint-dir", d]
    if huge:
        cmd.append("--huge-pages")
    p = spawn(cmd, log1 + ".err")
    r, restored = {}, None
    log, rlog = Log(log1), Log(log2)
    try:
        log.wait(lambda ls: ls and ls[-1][1] >= 3, 180, "the dirty steps", p)
        # Full checkpoint; the guest-observed stall is the worst step printed
        # from the request until the reply + 0.5 s.
        n1 = log.last_n()
        mark = len(log.lines)
        ck = vvmm_cli(args, "checkpoint", "--api", sock1, "--dir", d, "--mode", mode, "--json")
        t_reply = time.monotonic()
        n1_end = log.last_n()
        time.sleep(max(0.0, t_reply + 0.5 - time.monotonic()))
        log.poll()
        r.update(pause_ms=ck["pause_ms"], total_ms=ck["total_ms"], mb=ck["bytes_written"] / 1e6,
                 cow_stall_ms=ck.get("longest_stall_ms"), guest_stall_ms=log.max_gap_ms(mark),
                 live_rounds=ck.get("live_rounds"))
        # Incremental, ~3 steps after the full one ended.
        log.wait(lambda ls: ls[-1][1] >= n1_end + 3, 60, "3 more steps", p)
        n2 = log.last_n()
        inc = vvmm_cli(args, "checkpoint", "--api", sock1, "--dir", d, "--mode", mode, "--incremental", "--json")
        n2_end = log.last_n()
        if not inc.get("incremental"):
            raise RuntimeError("incremental checkpoint not incremental: %s" % inc)
        # Steps between the two capture instants: the pause (stop, cow) or the end (live).
        steps = (n2_end - n1_end) if mode == "live" else (n2 - n1)
        dirtied = min(steps * RATE, fill) * MIB
        r.update(inc_mb=inc["bytes_written"] / 1e6, inc_total_ms=inc["total_ms"], inc_pause_ms=inc["pause_ms"],
                 inc_steps=steps, inc_ratio=inc["bytes_written"] / dirtied if dirtied else None)
        last_n_before = n2
        reap(p)  # kill -9: the VMM dies, the checkpoint must be enough
        # Restore the newest (incremental) checkpoint.
        t0 = time.monotonic()
        restored = spawn([args.vvmm, "restore", "--dir", inc["path"], "--api", sock2, "--console", "file:" + log2,
                          "--checkpoint-dir", d], log2 + ".err")
        rlog.wait(lambda ls: bool(ls), 120, "the restored guest's first step", restored)
        first = rlog.lines[0]
        if first[1] <= last_n_before:
            raise RuntimeError("restored guest printed n=%d, not after the checkpoint's n=%d" % (first[1], last_n_before))
        st = vvmm_cli(args, "status", "--api", sock2, "--json")
        r.update(restore_ms=st["restore_ms"], restore_line_ms=(first[0] - t0) * 1000, restore_first_step_gap_ms=first[2] / 1000)
        try:
            vvmm_cli(args, "stop", "--api", sock2)
        except RuntimeError:
            pass
        return r
    except Exception as e:
        for q in (p, restored):
            if q is not None and q.poll() is not None:
                e.args = (str(e) + "\n" + stderr_of(q),)
        raise
    finally:
        log.close()
        rlog.close()
        for q in (p, restored):
            if q is not None:
                reap(q)
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- QEMU

def qemu_cmd(args, mib, log, sock, append, extra=()):
    return ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,arch-capabilities=off",
            "-M", "microvm,x-option-roms=off,rtc=off,acpi=off", "-m", "%dM" % mib,
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", "file:" + log, "-qmp", "unix:%s,server=on,wait=off" % sock,
            "-kernel", args.image, "-append", append] + list(extra)


def qemu_migrate(q, path, timeout):
    """migrate to a file through cat, wait for completion, fsync it."""
    q.execute("migrate", uri="exec:cat > " + path)
    deadline = time.monotonic() + timeout
    while True:
        info = q.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            break
        if status in ("failed", "cancelled"):
            raise RuntimeError("QEMU migration %s: %s" % (status, info.get("error-desc", info)))
        if time.monotonic() > deadline:
            q.execute("migrate_cancel")
            raise TimeoutError("QEMU migration did not complete in %d s (ram: %s)" % (timeout, info.get("ram")))
        time.sleep(0.001)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return info


def qemu_once(args, work, mib, fill, mode):
    log1, log2 = os.path.join(work, "q.log"), os.path.join(work, "qr.log")
    sock1, sock2, state = os.path.join(work, "q.sock"), os.path.join(work, "qr.sock"), os.path.join(work, "q.state")
    for f in (log1, log2, sock1, sock2, state):
        if os.path.exists(f):
            os.unlink(f)
    workload = CMDLINE + " test=dirty fill=%d rate=%d" % (fill, RATE)
    p = spawn(qemu_cmd(args, mib, log1, sock1, workload), log1 + ".err")
    r, restored, q, q2 = {}, None, None, None
    log, rlog = Log(log1), Log(log2)
    try:
        q = QMP(sock1)
        # QEMU caps migration at 128 MiB/s by default: lift it, a checkpoint wants the disk's speed.
        q.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        if mode == "background-snapshot":
            q.execute("migrate-set-capabilities", capabilities=[{"capability": "background-snapshot", "state": True}])
        log.wait(lambda ls: ls and ls[-1][1] >= 3, 180, "the dirty steps", p)
        n1 = log.last_n()
        mark = len(log.lines)
        t0 = time.monotonic()
        if mode == "stop":
            q.execute("stop")
        info = qemu_migrate(q, state, args.qemu_timeout)
        t1 = time.monotonic()
        if q.execute("query-status")["status"] != "running":
            q.execute("cont")
        time.sleep(0.5)
        log.poll()
        total = (t1 - t0) * 1000
        r.update(pause_ms=total if mode == "stop" else info.get("downtime"), total_ms=total,
                 mb=os.path.getsize(state) / 1e6, guest_stall_ms=log.max_gap_ms(mark),
                 qemu_reported_total_ms=info.get("total-time"))
        q.close()
        q = None
        reap(p)
        # Restore: from exec until the guest runs (autostart, or cont for a stream of a stopped VM).
        t0 = time.monotonic()
        restored = spawn(qemu_cmd(args, mib, log2, sock2, workload, ["-incoming", "exec:cat " + state]), log2 + ".err")
        q2 = QMP(sock2)
        deadline = time.monotonic() + 120
        while True:
            status = q2.execute("query-status")["status"]
            if status not in ("inmigrate",):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("QEMU incoming migration did not finish")
            time.sleep(0.001)
        if status != "running":
            q2.execute("cont")
        t_run = time.monotonic()
        rlog.wait(lambda ls: bool(ls), 120, "the restored guest's first step", restored)
        first = rlog.lines[0]
        if first[1] <= n1:
            raise RuntimeError("QEMU restored guest printed n=%d, not after the snapshot's n=%d" % (first[1], n1))
        r.update(restore_ms=(t_run - t0) * 1000, restore_line_ms=(first[0] - t0) * 1000,
                 restore_first_step_gap_ms=first[2] / 1000)
        return r
    except Exception as e:
        for x in (p, restored):
            if x is not None and x.poll() is not None:
                e.args = (str(e) + "\n" + stderr_of(x),)
        raise
    finally:
        for c in (q, q2):
            if c is not None:
                c.close()
        log.close()
        rlog.close()
        for x in (p, restored):
            if x is not None:
                reap(x)
        if os.path.exists(state):
            os.unlink(state)


# ---------------------------------------------------------------- disk, huge pages

def disk_bandwidth(work, runs):
    """MB/s (10^6) of 1 GiB of random data written with O_DIRECT + fsync from page cache."""
    src, dst = os.path.join(work, "bw.src"), os.path.join(work, "bw.dst")
    with open(src, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(16 * MIB))
    with open(src, "rb") as f:
        while f.read(16 * MIB):
            pass
    out = []
    try:
        for _ in range(runs):
            t0 = time.monotonic()
            subprocess.run(["dd", "if=" + src, "of=" + dst, "bs=2M", "oflag=direct", "conv=fsync"],
                           check=True, capture_output=True)
            out.append(1024 * MIB / (time.monotonic() - t0) / 1e6)
            os.unlink(dst)
    finally:
        for f in (src, dst):
            if os.path.exists(f):
                os.unlink(f)
    return statistics.median(out)


class HugePages:
    """Raises nr_hugepages so that `need` pages are free; restores the old value."""
    PATH = "/proc/sys/vm/nr_hugepages"

    def __init__(self):
        self.old = None

    def reserve(self, need):
        def meminfo(key):
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
            return 0
        try:
            with open(self.PATH) as f:
                total = int(f.read())
            free = meminfo("HugePages_Free")
            if free >= need:
                return None
            if self.old is None:
                self.old = total
            with open(self.PATH, "w") as f:
                f.write(str(total + need - free))
            free = meminfo("HugePages_Free")
            return None if free >= need else "only %d of %d 2 MiB pages could be reserved" % (free, need)
        except OSError as e:
            return "cannot reserve huge pages: %s" % e

    def restore(self):
        if self.old is not None:
            with open(self.PATH, "w") as f:
                f.write(str(self.old))
            self.old = None


# ---------------------------------------------------------------- report

def med(samples, key):
    vals = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=1):
    return "-" if v is None else ("%.*f" % (digits, v))


ROWS = [  # (key, label, vvmm modes it applies to, in QEMU too)
    ("pause_ms", "pause ms", None, True),
    ("total_ms", "total ms", None, True),
    ("mb", "MB written", None, True),
    ("cow_stall_ms", "vmm longest cow stall ms", ("cow",), False),
    ("guest_stall_ms", "guest-observed max stall ms", None, True),
    ("live_rounds", "live rounds", ("live",), False),
    ("inc_steps", "incr: guest steps between", None, False),
    ("inc_mb", "incr: MB written", None, False),
    ("inc_ratio", "incr: bytes/(steps*64MiB)", None, False),
    ("inc_pause_ms", "incr: pause ms", None, False),
    ("inc_total_ms", "incr: total ms", None, False),
    ("restore_ms", "restore to running ms", None, True),
    ("restore_line_ms", "restore to next step line ms", None, True),
    ("restore_first_step_gap_ms", "restored 1st step maxgap ms", None, True),
]


def print_table(size, mode, res):
    cols = [c for c in ("vvmm", "vvmm-huge", "qemu") if res.get(c) is not None]
    qname = QEMU_MODE[mode]
    print("\n%s, mode %s (QEMU: %s)" % (size, mode, qname))
    print("%-30s" % "metric" + "".join("%12s" % c for c in cols) + "%12s" % "vvmm/qemu")
    for key, label, modes, in_qemu in ROWS:
        if modes and mode not in modes:
            continue
        vals = {c: med(res[c], key) if isinstance(res[c], list) else None for c in cols}
        ratio = None
        if in_qemu and vals.get("qemu") and vals.get("vvmm") is not None:
            ratio = vals["vvmm"] / vals["qemu"]
        digits = 0 if key in ("live_rounds", "inc_steps") else (2 if key == "inc_ratio" else 1)
        print("%-30s" % label + "".join("%12s" % fmt(vals[c], digits) for c in cols) +
              "%12s" % ("-" if ratio is None else "%.2fx" % ratio))
    for c in cols:
        if isinstance(res[c], str):
            print("  %s: %s" % (c, res[c]))


def main():
    refuse_emulated_timing("bench/ckpt.py")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="512M,2G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="stop,live,cow")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--no-huge", action="store_true")
    ap.add_argument("--quick", action="store_true", help="sizes 512M, runs 1")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--vvmm", default="build/vvmm")
    ap.add_argument("--image", default="build/guest/testguest.bzImage")
    ap.add_argument("--workdir", default="/var/tmp", help="where checkpoints go (deleted after each run)")
    ap.add_argument("--qemu-timeout", type=int, default=30, help="seconds a QEMU migration may take")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.runs = "512M", 1
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in QEMU_MODE:
            ap.error("unknown mode %s" % m)
    for f in (args.vvmm, args.image):
        if not os.path.exists(f):
            ap.error("%s not found (build first: ninja -C build)" % f)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    work = tempfile.mkdtemp(prefix="vvmm-ckptbench-", dir=args.workdir)
    huge = HugePages()
    results = {"runs": args.runs, "rate_mb": RATE, "sizes": {}}
    try:
        bw = disk_bandwidth(work, min(args.runs, 3))
        results["disk_direct_write_mbps"] = bw
        print("checkpoint/restore of one VM, test=dirty rate=%d, medians of %d runs; disk O_DIRECT write %.0f MB/s (%s)"
              % (RATE, args.runs, bw, args.workdir), flush=True)
        for size in sizes:
            mib = parse_size(size)
            fill = int(mib * 0.88)
            variants = ["vvmm"] + ([] if args.no_huge else ["vvmm-huge"])
            res = {m: {} for m in modes}
            for variant in variants:
                if variant == "vvmm-huge":
                    why = huge.reserve(mib // 2 + 16)
                    if why:
                        for m in modes:
                            res[m][variant] = "not available: " + why
                        continue
                for m in modes:
                    samples = []
                    for i in range(args.runs):
                        try:
                            samples.append(vvmm_once(args, work, mib, fill, m, variant == "vvmm-huge"))
                        except (RuntimeError, ValueError, KeyError) as e:
                            print("  %s %s %s run %d FAILED: %s" % (variant, size, m, i, e), flush=True)
                    res[m][variant] = samples or "failed"
                    print("  done %s %s %s" % (variant, size, m), flush=True)
            if not args.no_qemu:
                for m in modes:
                    samples, err = [], None
                    for i in range(args.runs):
                        try:
                            samples.append(qemu_once(args, work, mib, fill, QEMU_MODE[m]))
                        except QMPError as e:
                            err = "not available: %s" % e
                            break
                        except (RuntimeError, TimeoutError, ConnectionError) as e:
                            err = "failed: %s" % e
                            print("  qemu %s %s run %d FAILED: %s" % (size, m, i, e), flush=True)
                    res[m]["qemu"] = samples or err
                    print("  done qemu %s %s" % (size, m), flush=True)
            results["sizes"][size] = {"mib": mib, "fill_mb": fill, "modes": res}
        report(results, sizes, modes)
    finally:
        for p in list(PROCS):
            reap(p)
        huge.restore()
        shutil.rmtree(work, ignore_errors=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=str)


def report(results, sizes, modes):
    bw = results["disk_direct_write_mbps"]
    for size in sizes:
        s = results["sizes"][size]
        print("\n===== guest %s (fill %d MiB, rate %d MiB/step)" % (size, s["fill_mb"], RATE))
        for m in modes:
            print_table(size, m, s["modes"][m])
        st = s["modes"].get("stop", {})
        for v in ("vvmm", "vvmm-huge"):
            if isinstance(st.get(v), list):
                t, mb = med(st[v], "total_ms"), med(st[v], "mb")
                print("%s stop: total %.0f ms vs bytes/bandwidth %.0f MB / %.0f MB/s = %.0f ms -> %.2fx"
                      % (v, t, mb, bw, mb / bw * 1000, t / (mb / bw * 1000)))
    goals = []

    def goal(text, value, ok):
        goals.append((text, value, ok))

    for size in sizes:
        ms = results["sizes"][size]["modes"]
        for v in ("vvmm", "vvmm-huge"):
            def g(mode, key):
                x = ms.get(mode, {}).get(v)
                return med(x, key) if isinstance(x, list) else None
            tag = "%s %s" % (v, size)
            if g("cow", "pause_ms") is not None:
                goal("%s cow pause <= 2 ms" % tag, "%.2f ms" % g("cow", "pause_ms"), g("cow", "pause_ms") <= 2)
                goal("%s cow total <= 1.5 s" % tag, "%.0f ms" % g("cow", "total_ms"), g("cow", "total_ms") <= 1500)
                goal("%s cow longest stall (vmm) <= 20 ms" % tag, "%.1f ms" % g("cow", "cow_stall_ms"), g("cow", "cow_stall_ms") <= 20)
                gs = g("cow", "guest_stall_ms")
                if gs is not None:
                    goal("%s cow longest stall (guest) <= 20 ms" % tag, "%.1f ms" % gs, gs <= 20)
            if g("live", "pause_ms") is not None:
                goal("%s live final pause <= 10 ms" % tag, "%.2f ms" % g("live", "pause_ms"), g("live", "pause_ms") <= 10)
            if g("stop", "total_ms") is not None:
                x = g("stop", "total_ms") / (g("stop", "mb") / results["disk_direct_write_mbps"] * 1000)
                goal("%s stop total <= 1.3 x bytes/bandwidth" % tag, "%.2fx" % x, x <= 1.3)
            for m in modes:
                if g(m, "restore_ms") is not None:
                    goal("%s %s restore to running <= 50 ms" % (tag, m), "%.1f ms" % g(m, "restore_ms"), g(m, "restore_ms") <= 50)
                if g(m, "inc_ratio") is not None:
                    r = g(m, "inc_ratio")
                    goal("%s %s incremental bytes/(steps*64MiB) in 0.8..1.5" % (tag, m), "%.2f" % r, 0.8 <= r <= 1.5)
    # Restore time independent of RAM size: the largest vs the smallest size.
    if len(sizes) > 1:
        for v in ("vvmm", "vvmm-huge"):
            for m in modes:
                vals = []
                for size in sizes:
                    x = results["sizes"][size]["modes"].get(m, {}).get(v)
                    if isinstance(x, list) and med(x, "restore_ms") is not None:
                        vals.append(med(x, "restore_ms"))
                if len(vals) == len(sizes):
                    lo, hi = min(vals), max(vals)
                    goal("%s %s restore_ms same across %s (max/min <= 1.5 or within 5 ms)" % (v, m, "/".join(sizes)),
                         " / ".join("%.1f" % x for x in vals), hi <= 1.5 * lo or hi - lo <= 5)
    print("\n===== goals")
    for text, value, ok in goals:
        print("%-4s %-72s %s" % ("PASS" if ok else "FAIL", text, value))
    results["goals"] = [{"goal": t, "value": v, "pass": ok} for t, v, ok in goals]


if __name__ == "__main__":
    sys.exit(main())
