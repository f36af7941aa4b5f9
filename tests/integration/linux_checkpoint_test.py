"""Debian's kernel through checkpoints: a Linux VM (2 vCPUs) runs `lw`, which
rewrites 32 MiB with a pattern it verifies and appends numbered, fsynced
records to a file on an ext4 virtio-blk disk. It is checkpointed in stop, live
and cow mode and incrementally; after each checkpoint the VMM is killed with
kill -9 and the VM restored from it. The process must go on from the
checkpoint (lw fails loudly on a memory mismatch or a clock going back), the
file must hold records 1..N with none missing or repeated, the guest log must
have no soft lockup, RCU stall or clocksource complaint, and e2fsck -fn on
the disk as the final chain presents it must be clean."""
import json
import os
import re
import subprocess
import time

import harness as h
import vmproc

h.require_hardware_virtualization()

KERNEL = os.path.join(h.GUEST_DIR, "vmlinuz")
INITRD = os.path.join(h.GUEST_DIR, "initramfs.cpio.gz")
h.check(os.path.exists(KERNEL) and os.path.exists(INITRD), "run guest-images/linux/build.sh first")
RECORDS = 100  # room for four checkpoints and restores, however far a live one lets lw run ahead
# Kernel complaints that mean a restore disturbed the guest's sense of time.
BAD = re.compile(r"soft lockup|rcu.{0,40}stall|clocksource.{0,60}(unstable|skew|watchdog)|hung_task|BUG:|Oops",
                 re.IGNORECASE)

work = vmproc.workdir("vvmm-linux-ckpt-")
disk = os.path.join(work, "disk.ext4")
subprocess.run(["mkfs.ext4", "-q", "-F", disk, "64M"], check=True)
root = os.path.join(work, "ckpts")
run = ("mount -t ext4 /dev/vda /mnt && lw --mem 32 --period-ms 200 --records /mnt/rec --max-records %d; s=$?; "
       "lw --check /mnt/rec; sync; umount /mnt && echo lw-unmounted; sleep 30; exit $s" % RECORDS)


def recs(vm):
    return [int(m.group(1)) for m in re.finditer(r"^lw: ok rec=(\d+)", vm.text(), re.M)]


def wait_rec(vm, at_least, what):
    """Waits for an `lw: ok` line with rec >= at_least; returns the newest rec."""
    deadline = time.monotonic() + h.t(120)
    while True:
        text = vm.text()
        if "lw: FAIL" in text:
            h.fail("%s: the workload failed:\n%s" % (what, vm.describe()))
        r = recs(vm)
        if r and r[-1] >= at_least:
            return r[-1]
        if vm.proc.poll() is not None:
            h.fail("%s: vvmm exited (%s):\n%s" % (what, vm.proc.returncode, vm.describe()))
        if time.monotonic() > deadline:
            h.fail("%s: no lw record >= %d in time:\n%s" % (what, at_least, vm.describe()))
        time.sleep(0.2)


def check_log(vm, what):
    bad = [l for l in vm.text().splitlines() if BAD.search(l)]
    h.check(not bad, "%s: the guest kernel complained:\n%s" % (what, "\n".join(bad[:10])))


vm = vmproc.Vm(["run", "--kernel", KERNEL, "--initrd", INITRD, "--cpus", "2", "--mem", "512M",
                "--disk", "path=" + disk, "--cmdline", 'vvmm.run="%s"' % run], work, "boot")
rec = wait_rec(vm, 3, "boot")
print("ok: Linux booted, lw at record %d" % rec, flush=True)

for i, (mode, incremental) in enumerate([("stop", False), ("live", False), ("cow", False), ("cow", True)]):
    what = "%s%s" % (mode, " incremental" if incremental else "")
    at_ckpt = recs(vm)[-1]
    print("%s: checkpointing at record %d" % (what, at_ckpt), flush=True)
    reply = vm.checkpoint(root, mode, incremental)
    at_reply = recs(vm)[-1]  # a live checkpoint's instant is its last pause, just before the reply
    h.check(reply["incremental"] == incremental, "%s: incremental=%s: %s" % (what, reply["incremental"], reply))
    wait_rec(vm, at_reply + 10, what + ": after the checkpoint")
    check_log(vm, what)
    vm.kill9()
    vm = vmproc.Vm.restore(work, "restore-%d" % i, reply["path"])
    first = wait_rec(vm, 0, what + ": restored")
    # The restored process goes on from the checkpoint: its first status line
    # (one a second, ~5 records) is at most a few records past what it had
    # written by the reply, never past what the killed VM wrote after it.
    h.check(at_ckpt <= first <= at_reply + 6,
            "%s: the restored lw reports record %d, the checkpoint was taken between records %d and %d"
            % (what, first, at_ckpt, at_reply))
    wait_rec(vm, first + 2, what + ": restored")
    check_log(vm, what + " restored")
    print("ok: %s checkpoint at record ~%d (pause %.1f ms, total %.1f ms, %.1f MiB), kill -9, restored, "
          "lw going on at %d" % (what, at_ckpt, reply["pause_ms"], reply["total_ms"],
                                 reply["bytes_written"] / 2**20, first), flush=True)

deadline = time.monotonic() + h.t(300)
while "lw-unmounted" not in vm.text():
    if "lw: FAIL" in vm.text() or vm.proc.poll() is not None or time.monotonic() > deadline:
        h.fail("lw did not finish and unmount:\n" + vm.describe())
    time.sleep(0.5)
text = vm.text()
m = re.search(r"^lw: check records=(\d+) first=1 last=(\d+) gaps=0 dups=0", text, re.M)
h.check(m and int(m.group(1)) == RECORDS, "the guest's record check failed:\n" + vm.describe())
check_log(vm, "final")

# The disk as the chain presents it: a last checkpoint (the guest has
# unmounted and sleeps) freezes the chain, whose layers the manifest lists.
final = vm.checkpoint(root, "stop")
status = vm.proc.wait(timeout=h.t(120))
h.check(status == 0, "the guest did not shut down cleanly (status %s):\n%s" % (status, vm.describe()))
with open(os.path.join(final["path"], "manifest.json")) as f:
    manifest = json.load(f)
flat = os.path.join(work, "flat.ext4")
d = manifest["disks"][0]
subprocess.run(["cp", "--sparse=always", d["base"], flat], check=True)
with open(flat, "r+b") as out:
    for layer in d["layers"]:
        if layer.endswith(".map"):
            continue
        with open(os.path.join(final["path"], layer), "rb") as src:
            size = os.fstat(src.fileno()).st_size
            off = 0
            while off < size:
                try:
                    start = os.lseek(src.fileno(), off, os.SEEK_DATA)
                except OSError:
                    break
                end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
                src.seek(start)
                out.seek(start)
                out.write(src.read(end - start))
                off = end
fsck = subprocess.run(["e2fsck", "-fn", flat], capture_output=True, text=True)
h.check(fsck.returncode == 0, "e2fsck -fn on the restored disk is not clean:\n" + fsck.stdout + fsck.stderr)
got = subprocess.run(["debugfs", "-R", "cat /rec", flat], capture_output=True, text=True).stdout
numbers = [int(m.group(1)) for m in re.finditer(r"^rec (\d+) ", got, re.M)]
h.check(numbers == list(range(1, RECORDS + 1)),
        "the records on the disk are not 1..%d: %s" % (RECORDS, numbers[:5] + ["..."] + numbers[-5:]))
print("ok: %d records, none missing or repeated; e2fsck -fn clean; no kernel complaint" % RECORDS)
