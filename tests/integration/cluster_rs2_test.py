"""Reed-Solomon parity and a parity holder lost mid-epoch (issue 12): 5 nodes
(network namespaces), one test=ring VM each, storage = "memory" with rs:2 in
sets of 3 (vm0, vm1, vm2 with parity on n3 and n4; vm3, vm4 with parity on
n0 and n1), epochs every 2 s.
  - Node n3 (vm3, and set 0's first parity block) is killed while an epoch
    is being captured: that epoch aborts on the survivors, and the epoch
    before it stays the newest one recorded, with all its parity.
  - Every VMM is then killed and the memory of n1 and n2 wiped: two members
    of set 0 are gone. Three lost nodes are refused before anything starts;
    `restore --lost n1 --lost n2` on n0, n3 and n4 rebuilds vm1 and vm2 from
    vm0's image and both parity blocks (a Reed-Solomon decode of two lost
    members), and every ring stream goes on from that epoch with nothing
    lost or doubled (reference.py)."""
import os
import re
import shutil
import signal
import time

import cluster as c
import harness as h

STEP = 1000
SURVIVORS = [0, 3, 4]


def kill_node_mid_epoch(boot, ring, node_index, vm):
    """Kills node node_index's launcher and VMM while vm0 is capturing an
    epoch (its checkpoint is still a .tmp directory, so it has not sent its
    parity yet and the epoch cannot commit). Returns the newest epoch n0 had
    recorded then."""
    vm0_dir = os.path.join(ring.mem, "n0", "vm0")
    deadline = time.monotonic() + h.t(120)
    while not any(n.startswith(".tmp-") for n in os.listdir(vm0_dir)):
        h.check(time.monotonic() < deadline, "no epoch began:\n" + boot.text()[-3000:])
        time.sleep(0.01)
    recorded = ring.records("n0")[-1]
    pid = c.vmm_pid(vm)
    os.killpg(boot.procs[node_index].pid, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    return recorded


def wait_abort_after(boot, recorded):
    deadline = time.monotonic() + h.t(120)
    while time.monotonic() < deadline:
        aborted = [(int(m.group(1)), m.group(0)) for m in re.finditer(r"epoch (\d+) aborted.*", boot.text())]
        later = [a for a in aborted if a[0] > recorded]
        if later:
            print(min(later)[1])
            return min(later)[0]
        time.sleep(0.5)
    h.fail(f"no epoch after {recorded} aborted once n3 was gone:\n" + boot.text()[-3000:])


def main():
    ring = c.DisklessRing(5, "rs2test", "rs:2", 3)
    nodes, mem, cfg = ring.nodes, ring.mem, ring.cfg
    history = []

    plan = c.vvmm_in(nodes[0][0], ["plan", "--cluster", cfg, "--mtbf", "3h"])
    h.check("set 0: vm0, vm1, vm2  parity on n3, n4" in plan.stdout, "unexpected placement:\n" + plan.stdout + plan.stderr)

    boot = c.Launch(ring.workdir, "boot", cfg, nodes, "run")
    history.append(("boot", boot))
    boot.wait_progress(ring.vms, STEP, what="ring traffic after boot")
    ring.wait_recorded("n0", 3, boot)

    # n3 holds set 0's first parity block: lost while an epoch is captured.
    recorded = kill_node_mid_epoch(boot, ring, 3, "vm3")
    aborted = wait_abort_after(boot, recorded)
    time.sleep(h.t(2))
    for i in (0, 1, 2, 4):
        h.check(ring.records(f"n{i}")[-1] == recorded,
                f"n{i} recorded epochs {ring.records(f'n{i}')} after n3 was lost in epoch {aborted}")
    print(f"n3 killed during epoch {aborted}: it aborted, epoch {recorded} stays the newest recorded")
    boot.kill9()

    # n1 and n2, two members of set 0, are gone with their memory.
    shutil.rmtree(os.path.join(mem, "n1"))
    shutil.rmtree(os.path.join(mem, "n2"))
    epoch = recorded
    r = c.vvmm_in(nodes[0][0], ["restore", "--cluster", cfg, "--node", "n0", "--lost", "n1", "--lost", "n2",
                                "--lost", "n3", "--epoch", str(epoch)])
    h.check(r.returncode != 0 and "parity set 0" in r.stderr and "can rebuild at most 1 lost" in r.stderr,
            f"restore with n1, n2 and n3 lost (two members and a parity block of set 0): rc {r.returncode}: {r.stderr}")
    print("three lost nodes: " + r.stderr.strip().splitlines()[-1])

    restored = c.Launch(ring.workdir, "rebuilt", cfg, nodes, "restore",
                        ["--lost", "n1", "--lost", "n2", "--epoch", str(epoch)], only=SURVIVORS)
    history.append(("rebuilt", restored))
    first = restored.wait_progress(ring.vms, 1, timeout=300, what="progress after the rebuild")
    restored.wait_progress(ring.vms, {v: first[v] + STEP for v in ring.vms}, what="progress after the rebuild")
    text = restored.text()
    for vm in ("vm1", "vm2"):
        h.check(re.search(vm + r"'s checkpoint of epoch \d+ rebuilt from parity", text),
                f"{vm}: no rebuild reported:\n" + text[-3000:])
    h.check("tg: ready" not in text, "a restored VM booted again")
    c.check_nothing_sent_to_rebuilder(text)
    print(f"vm1 and vm2 rebuilt from vm0 and two Reed-Solomon parity blocks; the cluster goes on")
    restored.kill9()

    c.check_ring_history(ring.ref, history, ring.macs)
    print("PASS")


if __name__ == "__main__":
    main()
