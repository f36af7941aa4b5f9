"""Checkpoints with a disk and with several busy vCPUs.

blkseq: the guest writes numbered 4 KiB blocks, each read first (it must
still be fresh). A checkpoint is taken in the middle; the original VM goes
on writing and is killed. A restore must see exactly the blocks of the
checkpoint instant: the ones written before are there, none written after
(by the original, or by another restore of the same checkpoint) leaks in.
smp: test=count on both vCPUs restores with both CPUs counting on."""
import os
import re
import shutil
import subprocess
import sys

import harness as h
from vmproc import Vm, CountReference, count_steps, workdir

h.require_kvm()

sys.path.insert(0, os.path.dirname(h.REFERENCE))
import reference  # noqa: E402  (the test guest's host-side reference)

tmp = workdir("vvmm-ckptdisk-")
print("work directory", tmp)
BLOCKS = 120


def blkseq_lines(vm):
    return [l for l in vm.lines() if l.startswith("tg: blkseq")]


def last_k(lines):
    ks = [int(m.group(1)) for m in (re.match(r"tg: blkseq k=(\d+) ", l) for l in lines) if m]
    return max(ks) if ks else -1


def finish_restore(name, ckpt, original_lines, k_before, k_after):
    """Restores `ckpt`, lets blkseq finish, checks the disk it saw."""
    vm = Vm.restore(tmp, name, ckpt)
    vm.wait_for(r"^tg: blkseq done", timeout=180)
    vm.proc.wait(timeout=30)
    h.check(vm.proc.returncode == 0, "%s: vvmm exited %s:\n%s" % (name, vm.proc.returncode, vm.describe()))
    lines = blkseq_lines(vm)
    first = min(int(m.group(1)) for m in (re.match(r"tg: blkseq k=(\d+) ", l) for l in lines) if m)
    h.check(k_before + 1 <= first <= k_after + 1,
            "%s: restored guest went on at block %d, checkpoint was between blocks %d and %d" % (name, first, k_before, k_after))
    # The blocks before `first` are the original run's, from before the checkpoint.
    earlier = [l for l in original_lines if (m := re.match(r"tg: blkseq k=(\d+) ", l)) and int(m.group(1)) < first]
    problems = reference.blkseq_check(earlier + lines)
    h.check(not problems, "%s: disk is not the checkpoint's:\n  %s\n%s" % (name, "\n  ".join(problems[:10]), vm.describe()))
    return first


# 1. Numbered blocks across a checkpoint, restored twice (two branches), and an incremental link.
disk = os.path.join(tmp, "disk.img")
with open(disk, "wb") as f:
    f.truncate(4 << 20)
root = os.path.join(tmp, "ckpts")
vm = Vm.boot(tmp, "blkseq", "test=blkseq blocks=%d delay=40 msix=1 %s" % (BLOCKS, h.guest_irqwait()), extra=["--disk", "path=" + disk])
vm.wait_for(r"^tg: blkseq k=15 ")


def check_blk_report(vm, what):
    """`vvmm status` shows the disk's queue as the device and the driver see it."""
    st = vm.call("status")
    blks = [d for d in st.get("devices", []) if d.get("device", "").startswith("virtio-blk")]
    h.check(len(blks) == 1, "%s: status lists no single virtio-blk: %s" % (what, st))
    d = blks[0]
    q = d["queues"][0]
    ok = (d["status"] & 4 and d["msix_enabled"] and q["enabled"] and q["ring"]["used_idx"] == q["device"]["used_idx"]
          and (q["ring"]["avail_idx"] - q["device"]["last_avail"]) % 65536 <= q["size"] and "in_flight" in d["blk"])
    h.check(ok, "%s: virtio-blk report inconsistent: %s" % (what, d))


check_blk_report(vm, "running")
b1 = last_k(blkseq_lines(vm))
full = vm.checkpoint(root, "cow")
a1 = last_k(blkseq_lines(vm))
vm.wait_for(r"^tg: blkseq k=%d " % (a1 + 10))
b2 = last_k(blkseq_lines(vm))
inc = vm.checkpoint(root, "live", incremental=True)
a2 = last_k(blkseq_lines(vm))
h.check(inc["incremental"], "second checkpoint not incremental: %s" % inc)
vm.wait_for(r"^tg: blkseq k=%d " % (a2 + 10))
original = blkseq_lines(vm)
vm.kill9()
layers = sorted(os.listdir(os.path.join(root, ".layers")))
print("ok: original wrote up to block %d, then was killed; overlays: %s" % (last_k(original), layers))

x = finish_restore("branch-a", full["path"], original, b1, a1)
y = finish_restore("branch-b", full["path"], original, b1, a1)
h.check(x == y, "two restores went on at different blocks")
print("ok: cow checkpoint restored twice (independent branches), both went on at block %d with exactly the checkpoint's blocks" % x)
z = finish_restore("incremental", inc["path"], original, b2, a2)
print("ok: incremental live checkpoint restored at block %d with exactly its blocks" % z)
with open(disk, "rb") as f:
    written = [k for k in range(BLOCKS) if f.read(4096).startswith(b"BLKSEQ01")]
h.check(max(written) <= a1, "the base image got writes after the first checkpoint froze it (blocks up to %d)" % max(written))
print("ok: the base image holds only blocks written before the first checkpoint (up to %d)" % max(written))

# 2. Two busy vCPUs.
MB = 8
ref = CountReference(MB)
vm = Vm.boot(tmp, "smp", "test=count allcpus=1 mb=%d delay=20" % MB, cpus=2)
vm.wait_for(r"^tg: count cpu=1 n=3 ")
ck = vm.checkpoint(os.path.join(tmp, "smp-ckpts"), "cow")
vm.kill9()
r = Vm.restore(tmp, "smp-restored", ck["path"])
r.wait_for(r"^tg: count cpu=0 n=", count=4)
r.wait_for(r"^tg: count cpu=1 n=", count=4)
for cpu in (0, 1):
    steps = count_steps(r.lines(), cpu=cpu)
    ns = sorted(steps)
    h.check(ns == list(range(ns[0], ns[0] + len(ns))), "cpu %d: steps not consecutive after restore: %s" % (cpu, ns))
    for n, s in steps.items():
        h.check(s == ref.sum(n), "cpu %d step %d: sum %s, expected %s" % (cpu, n, s, ref.sum(n)))
h.check(r.stop() == 0, "restored 2-vCPU VM did not stop cleanly")
print("ok: a 2-vCPU guest counting on both CPUs restored with both CPUs working")

shutil.rmtree(tmp)
