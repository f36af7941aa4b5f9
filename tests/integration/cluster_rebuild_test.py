"""Rebuild after a lost node (issue 12): 4 nodes (network namespaces), one
test=ring VM each, storage = "memory" with xor parity in sets of 3 (vm0,
vm1, vm2, parity on n3; vm3 alone, parity on another node), epochs every
2 s. Every VMM is killed with kill -9 and node n1's memory is wiped: the
node is gone. Then:
  - `restore` on n0, n2 and n3 without --lost waits, naming vm1's node and
    the --lost that would rebuild it;
  - `restore --lost n1 --lost n2` is refused before anything starts, naming
    the set that cannot be rebuilt;
  - a parity block with one flipped byte makes the rebuild stop with the
    chunk named, and no VM resumes;
  - `restore --cluster --node nI --lost n1` on n0, n2 and n3 rebuilds vm1's
    checkpoint from vm0's and vm2's images and n3's parity, runs vm1 on n0
    (the least loaded survivor, first in file order), and every ring stream
    goes on from the epoch with nothing lost or doubled (reference.py)."""
import glob
import os
import re
import shutil
import time

import cluster as c
import harness as h

STEP = 1500
SURVIVORS = [0, 2, 3]


def main():
    ring = c.DisklessRing(4, "rebuildtest", "xor", 3)
    workdir, nodes, mem, cfg = ring.workdir, ring.nodes, ring.mem, ring.cfg
    history = []

    boot = c.Launch(workdir, "boot", cfg, nodes, "run")
    history.append(("boot", boot))
    boot.wait_progress(ring.vms, STEP, what="ring traffic after boot")
    ring.wait_recorded("n0", 3, boot)
    after = boot.progress()
    boot.wait_progress(ring.vms, {v: after[v] + 500 for v in ring.vms}, what="traffic after the epochs")
    boot.kill9()
    # Node n1 is gone, its memory with it.
    shutil.rmtree(os.path.join(mem, "n1"))
    epoch = min(ring.records(f"n{i}")[-1] for i in SURVIVORS)
    print(f"killed every VMM and wiped n1; restoring epoch {epoch}")

    # Without --lost the survivors wait for vm1, and say where it was and
    # how to go on without its node; nothing resumes.
    waiting = c.Launch(workdir, "waiting", cfg, nodes, "restore", ["--epoch", str(epoch)], only=SURVIVORS)
    deadline = time.monotonic() + h.t(60)
    hint = "no connection to vm1 on n1: if n1 is gone, stop and restore every surviving node with --lost n1"
    while hint not in waiting.text():
        h.check(time.monotonic() < deadline, "no hint about the unreachable node:\n" + waiting.text()[-3000:])
        time.sleep(0.5)
    h.check(not re.search(r"vm\d\s*\| tg: ring rx", waiting.text()), "a VM resumed without vm1")
    waiting.kill9()
    print("without --lost: " + next(l for l in waiting.text().splitlines() if hint in l).strip())

    # Two nodes of a set protected by one parity block: refused at once.
    r = c.vvmm_in(nodes[0][0], ["restore", "--cluster", cfg, "--node", "n0", "--lost", "n1", "--lost", "n2",
                                "--epoch", str(epoch)])
    h.check(r.returncode != 0 and "can rebuild at most" in r.stderr and "parity set 0" in r.stderr,
            f"restore with two lost nodes of one set: rc {r.returncode}: {r.stderr}")
    print("two lost nodes of one xor set: " + r.stderr.strip().splitlines()[-1])

    # A flipped byte in n3's parity block: the rebuild names the bad chunk.
    blocks = glob.glob(os.path.join(mem, "n3", "parity", "0.p0", "%06d.img" % epoch))
    h.check(len(blocks) == 1, f"n3 has no parity block of epoch {epoch}: {glob.glob(os.path.join(mem, 'n3', 'parity', '*', '*'))}")
    with open(blocks[0], "r+b") as f:
        f.seek(4096 * 3 + 5)
        byte = f.read(1)
        f.seek(4096 * 3 + 5)
        f.write(bytes([byte[0] ^ 0x20]))
    bad = c.Launch(workdir, "bad", cfg, nodes, "restore", ["--lost", "n1", "--epoch", str(epoch)], only=SURVIVORS)
    c.wait_all_failed(bad, timeout=300)
    h.check("corrupted" in bad.text() and "rebuilding vm1" in bad.text(),
            "no clear error for a corrupted parity chunk:\n" + bad.text()[-3000:])
    h.check(not re.search(r"vm\d\s*\| tg: ring rx", bad.text()), "a VM resumed although the rebuild failed")
    bad.kill9()
    with open(blocks[0], "r+b") as f:
        f.seek(4096 * 3 + 5)
        f.write(byte)
    shutil.rmtree(os.path.join(mem, "n0", "vm1"), ignore_errors=True)
    print("a corrupted parity chunk: refused, no VM resumed")

    restored = c.Launch(workdir, "rebuilt", cfg, nodes, "restore", ["--lost", "n1", "--epoch", str(epoch)],
                        only=SURVIVORS)
    history.append(("rebuilt", restored))
    first = restored.wait_progress(ring.vms, 1, timeout=300, what="progress after the rebuild")
    restored.wait_progress(ring.vms, {v: first[v] + STEP for v in ring.vms}, what="progress after the rebuild")
    text = restored.text()
    h.check("vm1 -> n0" in text, "vm1 was not placed on n0:\n" + text[-3000:])
    h.check(re.search(r"vm1's checkpoint of epoch \d+ rebuilt from parity", text), "no rebuild reported:\n" + text[-3000:])
    h.check("tg: ready" not in text, "a restored VM booted again")
    c.check_nothing_sent_to_rebuilder(text)
    h.check(os.path.isdir(os.path.join(mem, "n0", "vm1")), "vm1's rebuilt checkpoint is not on n0")
    print(f"vm1 rebuilt on n0 from parity; the cluster goes on")
    restored.kill9()

    c.check_ring_history(ring.ref, history, ring.macs)
    print("PASS")


if __name__ == "__main__":
    main()
