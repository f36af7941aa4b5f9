"""Checkpoint/restore of one VM running test=count: in each mode at
arbitrary moments, kill -9, restore, and the count goes on without gap or
repeat with the host-computed checksums; a chain of incremental checkpoints
restores from every link; one checkpoint restores twice; and for a paused
guest the three modes write byte-identical state and memory."""
import filecmp
import json
import os
import random
import shutil
import time

import harness as h
from vmproc import Vm, CountReference, count_steps, workdir

h.require_kvm()

MB = 16
CMDLINE = "test=count mb=%d delay=30" % MB
ref = CountReference(MB)
rng = random.Random(int(os.environ.get("VVMM_TEST_SEED", time.time())))
tmp = workdir("vvmm-ckpt-")
print("work directory", tmp)


def check_sums(steps, what):
    for n, s in steps.items():
        h.check(s == ref.sum(n), "%s: step %d sum %s, expected %s" % (what, n, s, ref.sum(n)))


def manifest_chunks(path):
    """The checksum of each 2 MiB chunk of guest memory (a full checkpoint)."""
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)["memory"]["chunks"]


def take(vm, root, mode, incremental=False):
    """A checkpoint at an arbitrary moment; returns (reply, last step before, last step after)."""
    time.sleep(rng.uniform(0.05, 0.4))
    before = max(count_steps(vm.lines()) or {0: 0})
    reply = vm.checkpoint(root, mode, incremental)
    after = max(count_steps(vm.lines()) or {0: 0})
    return reply, before, after


def check_restore(ckpt_dir, before, after, name, steps=3):
    """Restores `ckpt_dir`; the count must go on from the checkpoint instant."""
    vm = Vm.restore(tmp, name, ckpt_dir)
    vm.wait_for(r"^tg: count n=", count=steps, timeout=60)
    vm.check_sandboxed(name)
    restored = count_steps(vm.lines())
    first = min(restored)
    ns = sorted(restored)
    h.check(ns == list(range(first, first + len(ns))), "%s: steps not consecutive: %s" % (name, ns))
    h.check(before + 1 <= first <= after + 1,
            "%s: restored guest went on at step %d, but the checkpoint was taken between steps %d and %d"
            % (name, first, before, after))
    check_sums(restored, name)
    h.check(not any("error" in l for l in vm.lines()), "%s: guest reported an error:\n%s" % (name, vm.describe()))
    status = vm.call("status")
    h.check(status.get("ok") and status.get("state") == "running", "%s: status %s" % (name, status))
    h.check(vm.stop() == 0, "%s: vvmm did not stop cleanly:\n%s" % (name, vm.describe()))
    return first


# 1. Each mode, at arbitrary moments, kill -9, restore.
for mode in ("stop", "live", "cow"):
    root = os.path.join(tmp, "modes-" + mode)
    vm = Vm.boot(tmp, "orig-" + mode, CMDLINE, cpus=1)
    vm.wait_for(r"^tg: count n=2 ")
    vm.check_sandboxed("run")
    reply, before, after = take(vm, root, mode)
    vm.wait_for(r"^tg: count n=%d " % (after + 2))  # it ran on after the checkpoint...
    vm.kill9()                                       # ...and died
    check_sums(count_steps(vm.lines()), "original " + mode)
    first = check_restore(reply["path"], before, after, "restore-" + mode)
    print("ok: %s checkpoint (pause %.1f ms, total %.0f ms, %.1f MiB) restored at step %d"
          % (mode, reply["pause_ms"], reply["total_ms"], reply["bytes_written"] / 2**20, first))

# 2. A chain of 5: full + 4 incremental, in mixed modes; restore each link.
root = os.path.join(tmp, "chain")
vm = Vm.boot(tmp, "chain", CMDLINE, cpus=1)
vm.wait_for(r"^tg: count n=2 ")
links = []
for i, mode in enumerate(["stop", "cow", "live", "stop", "cow"]):
    reply, before, after = take(vm, root, mode, incremental=(i > 0))
    h.check(reply["incremental"] == (i > 0), "link %d: incremental=%s: %s" % (i, reply["incremental"], reply))
    if i > 0:
        h.check(reply["parent"] == links[-1][0]["id"], "link %d: parent %s, expected %s" % (i, reply["parent"], links[-1][0]["id"]))
        # Live rounds may write a page more than once, so compare pages, not bytes.
        h.check(reply["pages_written"] < links[0][0]["pages_written"] // 4,
                "link %d holds as many pages as a full checkpoint: %s" % (i, reply))
    links.append((reply, before, after))
    vm.wait_for(r"^tg: count n=%d " % (after + 1))
vm.kill9()
for i, (reply, before, after) in enumerate(links):
    first = check_restore(reply["path"], before, after, "chain-%d" % i)
    print("ok: chain link %d (%s, %s, %.1f MiB) restored at step %d"
          % (i, reply["mode"], "incremental" if reply["incremental"] else "full", reply["bytes_written"] / 2**20, first))

# 3. The same checkpoint restores twice, each time to the same instant.
reply, before, after = links[3]
a = check_restore(reply["path"], before, after, "twice-a")
b = check_restore(reply["path"], before, after, "twice-b")
h.check(a == b, "two restores of one checkpoint went on at different steps: %d and %d" % (a, b))
print("ok: the same checkpoint restored twice, both at step %d" % a)

# 4. A paused guest: stop, live and cow write byte-identical results.
root = os.path.join(tmp, "paused")
vm = Vm.boot(tmp, "paused", CMDLINE, cpus=2)
vm.wait_for(r"^tg: count n=2 ")
h.check(vm.call("pause")["state"] == "paused", "pause failed")
paths = [vm.checkpoint(root, mode)["path"] for mode in ("stop", "live", "cow")]
for f in ("state.bin", "memory.img"):
    for p in paths[1:]:
        h.check(filecmp.cmp(os.path.join(paths[0], f), os.path.join(p, f), shallow=False),
                "%s differs between %s and %s" % (f, paths[0], p))
h.check(vm.call("resume")["state"] == "running", "resume failed")
n = max(count_steps(vm.lines()))
vm.wait_for(r"^tg: count n=%d " % (n + 1))
h.check(vm.stop() == 0, "paused VM did not stop cleanly")
print("ok: stop, live and cow of a paused guest are byte-identical (state.bin, memory.img)")

# 5. A checkpoint asked for at once after a restore, while the restored VM
# still loads its memory lazily (ckpt/lazy_memory.hpp), must wait for the
# load: a chunk not loaded yet reads as zeros, and its userfaultfd
# registration would refuse a cow checkpoint's write-protection.
LAZY_MB = 256
vm = Vm.boot(tmp, "lazy", "test=count mb=%d delay=600000" % LAZY_MB, cpus=1, mem="512M")
vm.wait_for(r"^tg: count n=1 ", timeout=120)  # then it idles for 10 min
first = vm.checkpoint(os.path.join(tmp, "lazy-a"), "stop")
vm.kill9()
a = manifest_chunks(first["path"])
zero = a[-1]  # the top of RAM, far above the count's area
held = [i for i, c in enumerate(a) if c != zero]
h.check(len(held) >= LAZY_MB // 2, "the first checkpoint holds %d chunks of data, expected at least %d"
        % (len(held), LAZY_MB // 2))
for mode in ("stop", "cow"):
    vm = Vm.restore(tmp, "lazy-" + mode, first["path"])
    again = vm.checkpoint(os.path.join(tmp, "lazy-b-" + mode), mode)  # no wait: the load has just begun
    vm.kill9()
    b = manifest_chunks(again["path"])
    lost = [i for i in held if b[i] == zero]
    h.check(not lost, "a %s checkpoint taken during the lazy restore saved %d chunks of data as zeros (first %d)"
            % (mode, len(lost), lost[0] if lost else -1))
    changed = [i for i in held if b[i] != a[i]]
    h.check(len(changed) <= 2, "a %s checkpoint taken during the lazy restore of an idle guest changed %d of its "
            "%d chunks of data" % (mode, len(changed), len(held)))
print("ok: a stop and a cow checkpoint asked for during a lazy restore waited for it and saved all %d chunks of data"
      % len(held))

shutil.rmtree(tmp)
