"""Bad checkpoints are refused with one clear line and never run; a
checkpoint that cannot be written (full disk) fails cleanly and the VM keeps
running; kill -9 in the middle of a checkpoint leaves the previous one
restorable."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import harness as h
from vmproc import Vm, CountReference, count_steps, workdir

h.require_kvm()

MB = 16
CMDLINE = "test=count mb=%d delay=30" % MB
ref = CountReference(MB)
tmp = workdir("vvmm-ckptfault-")
print("work directory", tmp)


def restore_fails(ckpt_dir, expect, extra=(), timeout=60):
    """vvmm restore must exit 1 with one error line containing `expect`."""
    r = h.run_vvmm(["restore", "--dir", ckpt_dir, "--console", "file:" + os.path.join(tmp, "refused.console")]
                   + list(extra), timeout=timeout)
    # (--trust-unsigned adds a warning that the seal was not checked)
    errors = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith("vvmm: warning:")]
    h.check(r.status == 1, "restore of %s should fail (%s), got status %s:\n%s" % (ckpt_dir, expect, r.status, r.describe()))
    h.check(len(errors) == 1 and errors[0].startswith("vvmm: error:") and expect in errors[0],
            "restore of %s: expected one error line with %r, got:\n%s" % (ckpt_dir, expect, r.stderr))
    return errors[0]


def copy_ckpt(src, name):
    dst = os.path.join(os.path.dirname(src), name)
    shutil.copytree(src, dst)
    return dst


def edit_manifest(d, change):
    path = os.path.join(d, "manifest.json")
    with open(path) as f:
        m = json.load(f)
    change(m)
    with open(path, "w") as f:
        json.dump(m, f)


def data_offset(d):
    """An offset in memory.img inside a chunk that holds data."""
    with open(os.path.join(d, "manifest.json")) as f:
        m = json.load(f)
    with open(os.path.join(d, "memory.img"), "rb") as f:
        for c, hsum in enumerate(m["memory"]["chunks"]):
            if hsum is None:
                continue
            f.seek(c * 2**21)
            chunk = f.read(2**21)
            for off in range(0, len(chunk), 4096):
                if any(chunk[off:off + 64]):
                    return c * 2**21 + off + 8
    h.fail("no data in " + d)


# A good checkpoint to damage.
root = os.path.join(tmp, "ckpts")
vm = Vm.boot(tmp, "orig", CMDLINE)
vm.wait_for(r"^tg: count n=2 ")
good = vm.checkpoint(root, "stop")["path"]

# 1. Damaged checkpoints.
d = copy_ckpt(good, "flip-memory")
off = data_offset(d)
with open(os.path.join(d, "memory.img"), "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0x40]))
line = restore_fails(d, "corrupted", extra=["--verify", "full"])
print("ok: flipped memory byte, --verify full:", line)
# Lazily: the VM stops when it reaches the bad chunk, the guest never sees it.
line = restore_fails(d, "corrupted")
print("ok: flipped memory byte, lazy:", line)

d = copy_ckpt(good, "flip-state")
with open(os.path.join(d, "state.bin"), "r+b") as f:
    f.seek(100)
    b = f.read(1)
    f.seek(100)
    f.write(bytes([b[0] ^ 1]))
print("ok:", restore_fails(d, "checksum mismatch"))

d = copy_ckpt(good, "trunc-state")
os.truncate(os.path.join(d, "state.bin"), 1000)
print("ok:", restore_fails(d, "truncated"))

d = copy_ckpt(good, "trunc-memory")
os.truncate(os.path.join(d, "memory.img"), 2**20)
print("ok:", restore_fails(d, "truncated"))

d = copy_ckpt(good, "trunc-manifest")
with open(os.path.join(d, "manifest.json"), "r+") as f:
    f.truncate(200)
print("ok:", restore_fails(d, "not valid JSON"))

# Manifests are sealed with the user's key: an edited one is refused before
# any of its fields is used (a forged disk base would be opened as root).
d = copy_ckpt(good, "forged-disk")
edit_manifest(d, lambda m: m["disks"].append({"base": "/etc/shadow", "base_size": 1, "base_mtime_ns": 0, "layers": []}))
print("ok:", restore_fails(d, "has a MAC that does not match the key file"))
d = copy_ckpt(good, "unsealed")
edit_manifest(d, lambda m: m.pop("mac"))
print("ok:", restore_fails(d, "is not sealed (no MAC); refused (--trust-unsigned"))
other_key = os.path.join(tmp, "other.key")
with open(os.open(other_key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
    f.write("11" * 32 + "\n")
print("ok:", restore_fails(good, "does not match the key file " + other_key, extra=["--checkpoint-key", other_key]))
print("ok:", restore_fails(good, "No such file", extra=["--checkpoint-key", os.path.join(tmp, "no-such.key")]))

# Past the seal (the user vouches with --trust-unsigned), every field is still checked.
TRUST = ["--trust-unsigned"]
d = copy_ckpt(good, "newer-format")
edit_manifest(d, lambda m: m.update(format_version=99))
print("ok:", restore_fails(d, "newer than this vvmm", extra=TRUST))

d = copy_ckpt(good, "wrong-shape")
edit_manifest(d, lambda m: m["vm"].update(cpus=2))
print("ok:", restore_fails(d, "section 'vcpu1' is missing", extra=TRUST))

d = copy_ckpt(good, "wrong-mem")
edit_manifest(d, lambda m: m["vm"].update(mem_bytes=m["vm"]["mem_bytes"] * 2))
print("ok:", restore_fails(d, "does not fit a VM", extra=TRUST))

print("ok:", restore_fails(os.path.join(root, "no-such-checkpoint"), "no checkpoint at"))

# 2. A full disk: the checkpoint fails, cleans up, the VM keeps running.
small = os.path.join(tmp, "small")
os.makedirs(small)
mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", small]).returncode == 0
if mounted:
    try:
        reply = vm.call("checkpoint", "--dir", os.path.join(small, "ckpts"), "--mode", "cow")
        h.check(reply.get("ok") is False and "No space left" in reply.get("error", ""),
                "checkpoint to a full disk should fail with ENOSPC: %s" % reply)
        left = [e for e in os.listdir(os.path.join(small, "ckpts")) if not e.startswith(".layers")]
        h.check(left == [], "a failed checkpoint left files behind: %s" % left)
        n = max(count_steps(vm.lines()))
        vm.wait_for(r"^tg: count n=%d " % (n + 2))
        h.check(vm.call("status")["state"] == "running", "VM not running after a failed checkpoint")
        print("ok: checkpoint to a full disk:", reply["error"])
    finally:
        subprocess.run(["umount", small])
else:
    print("note: could not mount a small tmpfs (not root?): full-disk case not run")

# 3. The sandbox confines checkpoints to the VM's --checkpoint-dir (vmproc
# gives `tmp`): one outside is refused before anything is written, and the
# VM keeps running; without --dir the checkpoint goes to --checkpoint-dir.
outside = tempfile.mkdtemp(prefix="vvmm-outside-")
reply = vm.call("checkpoint", "--dir", os.path.join(outside, "ckpts"))
h.check(reply.get("ok") is False and "is outside this VM's checkpoint directory" in reply.get("error", ""),
        "a checkpoint outside --checkpoint-dir: %s" % reply)
h.check(os.listdir(outside) == [], "a refused checkpoint wrote into %s: %s" % (outside, os.listdir(outside)))
os.rmdir(outside)
reply = vm.call("checkpoint")
h.check(reply.get("ok") is True and os.path.dirname(reply.get("path", "")) == os.path.realpath(tmp),
        "a checkpoint without --dir should go to --checkpoint-dir %s: %s" % (tmp, reply))
h.check(vm.call("status")["state"] == "running", "VM not running after the refused checkpoint")
print("ok: checkpoints confined to --checkpoint-dir; without --dir one lands there:", reply["path"])

# One guest at a time: in the test host VM, two guests at once under
# multi-threaded TCG meet its emulation race (a triple fault at boot).
h.check(vm.stop() == 0, "VM did not stop cleanly after the full-disk case")

# A sandboxed VM started without --checkpoint-dir can write checkpoints nowhere.
nodir = Vm.boot(tmp, "no-ckpt-dir", CMDLINE, checkpoint_dir=None)
nodir.wait_for(r"^tg: count n=1 ")
reply = nodir.call("checkpoint", "--dir", os.path.join(tmp, "nodir-ckpts"))
h.check(reply.get("ok") is False and "start it with --checkpoint-dir DIR" in reply.get("error", "") and
        not os.path.exists(os.path.join(tmp, "nodir-ckpts")), "checkpoint of a VM without --checkpoint-dir: %s" % reply)
h.check(nodir.stop() == 0, "VM without --checkpoint-dir did not stop cleanly")
print("ok: without --checkpoint-dir:", reply["error"])

# 4. kill -9 during a checkpoint leaves the previous one restorable.
big = Vm.boot(tmp, "big", "test=count mb=256 delay=10", mem="1G")
big.wait_for(r"^tg: count n=1 ")
root2 = os.path.join(tmp, "killed")
first = big.checkpoint(root2, "stop")
before = max(count_steps(big.lines()))
proc = subprocess.Popen([h.VVMM, "checkpoint", "--api", big.api, "--dir", root2, "--mode", "live"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.monotonic() + 20
while not any(e.startswith(".tmp-") for e in os.listdir(root2)):
    h.check(time.monotonic() < deadline, "second checkpoint never started")
    time.sleep(0.005)
t0 = time.monotonic()
status = big.call("status", timeout=10)  # answered while the checkpoint runs
h.check(status.get("ok") is True and time.monotonic() - t0 < 5, "status during a checkpoint: %s" % status)
h.check(proc.poll() is None, "the second checkpoint ended before the kill; make the guest bigger")
big.kill9()
proc.wait()
entries = sorted(e for e in os.listdir(root2) if not e.startswith(".layers"))
h.check("000002" not in entries, "a checkpoint killed half-way was published: %s" % entries)
r = Vm.restore(tmp, "after-kill", first["path"])
r.wait_for(r"^tg: count n=", count=2, timeout=120)
steps = count_steps(r.lines())
bigref = CountReference(256)
for n, s in steps.items():
    h.check(s == bigref.sum(n), "restored after kill: step %d sum mismatch" % n)
# The next checkpoint in that directory removes the dead one's leftovers.
again = r.checkpoint(root2, "stop")
entries = sorted(e for e in os.listdir(root2) if not e.startswith(".layers"))
h.check(entries == ["000001", "000002"], "leftovers not cleaned up: %s" % entries)
h.check(r.stop() == 0, "restored VM did not stop cleanly")
print("ok: kill -9 during a checkpoint left %s restorable; leftovers cleaned (%s)" % (first["id"], entries))

shutil.rmtree(tmp)
