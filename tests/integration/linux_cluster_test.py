"""The claim the cluster work exists for, on Linux guests: 3 Linux VMs on 3
nodes (network namespaces on one bridge), every pair joined by one guest TCP
connection that streams numbered, checksummed messages both ways
(guest-images/linux/tools/tcpstream: it fails loudly on a gap, a duplicate,
a reordering, a corruption, a reset or an EOF). The cluster is checkpointed
with `checkpoint --all` in each mode while the streams run, every VMM is
killed with kill -9, and `restore --cluster` brings it back (the last time
with every VM on another node): the same TCP connections carry on with no
message lost, doubled or reordered."""
import os
import re
import time

import cluster as c
import harness as h

h.require_hardware_virtualization(several_guests=True)
c.require_netns()

KERNEL = os.path.join(h.GUEST_DIR, "vmlinuz")
INITRD = os.path.join(h.GUEST_DIR, "initramfs.cpio.gz")
h.check(os.path.exists(KERNEL) and os.path.exists(INITRD), "run guest-images/linux/build.sh first")
VMS = ["vm0", "vm1", "vm2"]
OK = re.compile(r"^ts: ok me=(\S+) up=(\d+)/(\d+)((?: \S+=\d+/\d+)+)\s*$", re.M)


def streams(launch):
    """{(me, peer): (sent, received)} from the newest `ts: ok` line of each VM."""
    out = {}
    for vm, text in launch.consoles().items():
        h.check("ts: FAIL" not in text and "vvmm-linux: command exited" not in text,
                f"{vm}: the TCP streams broke:\n" + text[-3000:])
        last = None
        for m in OK.finditer(text):
            last = m
        if last and last.group(2) == last.group(3):
            for pair in last.group(4).split():
                peer, counts = pair.split("=")
                sent, received = counts.split("/")
                out[(last.group(1), peer)] = (int(sent), int(received))
    return out


def interesting(text):
    """The launchers' output without the guest kernels' boot messages."""
    lines = text.splitlines()
    kernel = [l for l in lines if re.match(r"vm\d\|\s*\[\s*\d+\.\d+\]", l)]
    rest = [l for l in lines if not re.match(r"vm\d\|\s*\[\s*\d+\.\d+\]", l)]
    tails = []
    for vm in VMS:
        tails += [l for l in kernel if l.startswith(vm + "|")][-12:]
    return "\n".join(tails + ["..."] + rest[-60:])


def wait_streams(launch, beyond, what, timeout=30):
    """Waits until all 6 directed streams are up and every received count is
    past `beyond` (a dict from a previous call) by at least 20 messages.
    The deadlines are short (a second of streaming is enough) so that,
    scaled in the test host VM, a stuck step fails with the consoles well
    within the VM run's own limit instead of being killed with it."""
    deadline = time.monotonic() + h.t(timeout)
    while True:
        s = streams(launch)
        if len(s) == 6 and all(s[k][1] >= beyond.get(k, (0, 0))[1] + 20 for k in s):
            return s
        for p in launch.procs:
            if p.poll() is not None:
                h.fail(f"{what}: a launcher ended early:\n" + interesting(launch.text()))
        if time.monotonic() > deadline:
            h.fail(f"{what}: the streams did not go on (now {s}, before {beyond}):\n" + interesting(launch.text()))
        time.sleep(1)


work = c.workdir()
nodes = c.make_nodes(3)
secret = c.write_secret(work)
subnet = "10.77.0."
ips = [subnet + str(i + 1) + "/24" for i in range(3)]
run = 'vvmm.run="tcpstream --me $VVMM_IP --peers $VVMM_PEERS --rate 20 --msg-bytes 256 --status-every 2"'
cfg = os.path.join(work, "cluster.toml")


def config(placement):
    c.write_config(cfg, "linuxtcp", nodes, placement, [run] * 3, os.path.join(work, "ckpt"), secret,
                   mem="256M", kernel=KERNEL, initrd=INITRD, ips=ips)


config([0, 1, 2])
launch = c.Launch(work, "boot", cfg, nodes, "run")
before = wait_streams(launch, {}, "boot", timeout=40)
print("ok: 3 Linux VMs booted, 6 TCP streams running: %s" % before, flush=True)

for i, mode in enumerate(["stop", "live", "cow"]):
    rc, reply, err = c.checkpoint_all(nodes[0][0], cfg, mode, timeout_s=int(h.t(30)))
    h.check(rc == 0 and reply.get("ok"), f"checkpoint --all --mode {mode} failed: {reply} {err}")
    at_checkpoint = streams(launch)
    wait_streams(launch, at_checkpoint, f"after the {mode} epoch")
    launch.kill9()
    if i == 2:
        config([1, 2, 0])  # every VM on another node
    launch = c.Launch(work, f"restore-{mode}", cfg, nodes, "restore", ["--epoch", str(reply["epoch"])])
    # The restored VMs go on from the epoch: their counts pass those of the
    # checkpoint instant, on the same connections, without a FAIL line.
    now = wait_streams(launch, at_checkpoint, f"after restoring the {mode} epoch")
    text = launch.text()
    h.check("vvmm-linux: init started" not in text, "a restored VM booted again:\n" + text[-2000:])
    print(f"ok: epoch {reply['epoch']} ({mode}, {reply['epoch_ms']:.0f} ms, pauses "
          + ", ".join(f"{v['name']} {v['pause_ms']:.0f} ms" for v in reply["vms"])
          + f"), kill -9 of every VMM, restored{' on other nodes' if i == 2 else ''}: streams going on {now}",
          flush=True)

launch.kill9()
print("ok: the guests' TCP connections survived 3 cluster checkpoint/kill/restore cycles, no message lost, "
      "doubled, reordered or corrupted (tcpstream checks every one)")
