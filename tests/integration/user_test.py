"""`vvmm --user NAME`: a VMM started by root runs as an unprivileged account.

One VM: its process has NAME's uid and gid, keeps only CAP_IPC_LOCK and
CAP_SYS_PTRACE and is sandboxed; files it creates (checkpoints) belong to
NAME; a cow checkpoint (userfaultfd) works, and a restore as NAME goes on
counting. A cluster launcher with --user: its VMMs run as NAME with the same
two capabilities, and checkpoint --all works. Bad --user values get one line.
The account is `nobody`; it must be able to open /dev/kvm."""
import json
import os
import pwd
import stat
import subprocess
import sys

import time

import cluster as c
import harness as h
from vmproc import Vm, CountReference, count_steps, workdir

h.require_kvm()


def skip(why):
    print("# SKIPPED: " + why, file=sys.stderr)
    sys.exit(h.SKIP)


USER = "nobody"
try:
    account = pwd.getpwnam(USER)
except KeyError:
    skip("there is no account '%s'" % USER)
if os.geteuid() != 0:
    skip("--user needs the tests to run as root")


def kvm_open_for(account):
    st = os.stat("/dev/kvm")
    groups = os.getgrouplist(account.pw_name, account.pw_gid)
    return st.st_mode & 0o006 == 0o006 or (st.st_gid in groups and st.st_mode & 0o060 == 0o060)


restore_mode = None
if not kvm_open_for(account):
    # The test host VM's /dev is its own devtmpfs: open it to everyone there.
    if not h.IN_KVM_HOST:
        skip("%s cannot open /dev/kvm here (add it to /dev/kvm's group to run this test)" % USER)
    restore_mode = stat.S_IMODE(os.stat("/dev/kvm").st_mode)
    os.chmod("/dev/kvm", 0o666)


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)


KEPT = (1 << 14) | (1 << 19)  # CAP_IPC_LOCK, CAP_SYS_PTRACE


def check_runs_as_user(pid, what):
    s = proc_status(pid)
    ids = "%d\t%d\t%d\t%d"
    h.check(s.get("Uid") == ids % ((account.pw_uid,) * 4) and s.get("Gid") == ids % ((account.pw_gid,) * 4),
            "%s: not running as %s: Uid=%s Gid=%s" % (what, USER, s.get("Uid"), s.get("Gid")))
    h.check(int(s.get("CapEff", "0"), 16) == KEPT and int(s.get("CapPrm", "0"), 16) == KEPT
            and int(s.get("CapAmb", "0"), 16) == 0,
            "%s: capabilities CapEff=%s CapPrm=%s CapAmb=%s, expected %x and no ambient" %
            (what, s.get("CapEff"), s.get("CapPrm"), s.get("CapAmb"), KEPT))


def owned_by_user(path):
    bad = []
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            if os.lstat(p).st_uid != account.pw_uid:
                bad.append(p)
    return bad


try:
    # 1. Bad values: one line each, non-zero exit, nothing started.
    for value, expect in (("no-such-account-x", "no such user"), ("root", "that is root")):
        r = subprocess.run([h.VVMM, "--user", value, "run", "--kernel", h.TESTGUEST], capture_output=True, text=True)
        h.check(r.returncode == 1 and expect in r.stderr and r.stderr.count("\n") == 1,
                "--user %s: status %s, stderr %r" % (value, r.returncode, r.stderr))

    # 2. One VM as the account: checkpoint, kill, restore.
    tmp = workdir("vvmm-user-")
    os.chown(tmp, account.pw_uid, account.pw_gid)
    ckpts = os.path.join(tmp, "ckpts")
    ref = CountReference(16)
    # The account's home (nobody's does not exist) holds no checkpoint key: name one.
    key = os.path.join(tmp, "checkpoint.key")
    vm = Vm(["--user", USER, "run", "--kernel", h.TESTGUEST, "--mem", "256M", "--cmdline", "test=count mb=16 delay=30",
             "--checkpoint-key", key], tmp, "user", ckpts)
    vm.client = ["--user", USER]  # its socket is the account's (mode 0600): so is the client
    vm.wait_for(r"^tg: count n=2 ")
    check_runs_as_user(vm.proc.pid, "run")
    vm.check_sandboxed("run --user")
    r = subprocess.run([h.VVMM, "status", "--api", vm.api], capture_output=True, text=True, timeout=h.t(30))
    h.check(r.returncode != 0 and "Permission denied" in r.stderr,
            "root's client (capabilities dropped) reached the account's socket: %s %r" % (r.returncode, r.stderr))
    reply = vm.checkpoint(ckpts, "cow")
    after = max(count_steps(vm.lines()))
    vm.wait_for(r"^tg: count n=%d " % (after + 2))
    vm.kill9()
    bad = owned_by_user(ckpts)
    h.check(not bad, "files the VMM wrote do not belong to %s: %s" % (USER, bad[:5]))
    print("ok: ran as %s (uid %d), cow checkpoint in %.0f ms, its files are %s's"
          % (USER, account.pw_uid, reply["total_ms"], USER))

    restored = Vm(["--user", USER, "restore", "--dir", reply["path"], "--checkpoint-key", key], tmp, "user-restored")
    restored.client = ["--user", USER]
    restored.wait_for(r"^tg: count n=", count=3)
    check_runs_as_user(restored.proc.pid, "restore")
    restored.check_sandboxed("restore --user")
    steps = count_steps(restored.lines())
    h.check(all(s == ref.sum(n) for n, s in steps.items()), "restored count has wrong sums: %s" % steps)
    h.check(restored.stop() == 0, "restored VMM did not stop cleanly:\n" + restored.describe())
    print("ok: restored as %s, counting on from step %d" % (USER, min(steps)))
    # 3. A cluster launcher with --user: its VMM runs as the account, with
    # the two capabilities (ambient through exec, then cleared), and a
    # checkpoint of the cluster works.
    c.require_netns()
    nodes = c.make_nodes(1)
    ctmp = c.workdir()
    os.chown(ctmp, account.pw_uid, account.pw_gid)
    secret = c.write_secret(ctmp)
    os.chown(secret, account.pw_uid, account.pw_gid)
    cfg = os.path.join(ctmp, "cluster.toml")
    c.write_config(cfg, "usr", nodes, [0], ["test=count mb=8 delay=30"], os.path.join(ctmp, "ckpts"), secret)
    launch = c.Launch(ctmp, "run", cfg, nodes, "run", pre=["--user", USER])
    deadline = time.monotonic() + h.t(60)
    while "tg: count n=2 " not in launch.consoles().get("vm0", ""):
        if time.monotonic() > deadline or any(p.poll() is not None for p in launch.procs):
            h.fail("the cluster VM did not count:\n" + launch.text()[-3000:])
        time.sleep(0.1)
    check_runs_as_user(c.vmm_pid("vm0"), "cluster VMM")
    launcher = proc_status(launch.procs[0].pid)  # `ip netns exec` became the launcher
    h.check(launcher.get("Uid", "").split("\t") == [str(account.pw_uid)] * 4
            and int(launcher.get("CapAmb", "0"), 16) == KEPT,
            "the launcher: Uid=%s CapAmb=%s" % (launcher.get("Uid"), launcher.get("CapAmb")))
    # The secret is the account's: so is the controller.
    r = c.vvmm_in(nodes[0][0], ["--user", USER, "checkpoint", "--all", "--cluster", cfg, "--mode", "stop", "--json"],
                  timeout=120)
    reply = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    h.check(r.returncode == 0 and reply.get("ok") is True,
            "checkpoint --all of a --user cluster: %s %s %s" % (r.returncode, reply, r.stderr))
    bad = owned_by_user(os.path.join(ctmp, "ckpts"))
    h.check(not bad, "cluster checkpoint files not %s's: %s" % (USER, bad[:5]))
    launch.kill9()
    print("ok: a cluster launched with --user runs its VMM as %s and checkpoints it (epoch %s)"
          % (USER, reply.get("epoch")))
finally:
    if restore_mode is not None:
        os.chmod("/dev/kvm", restore_mode)
sys.exit(0)
