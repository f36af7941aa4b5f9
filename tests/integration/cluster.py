"""A virtual cluster for tests: nodes as network namespaces (veth pairs on
one bridge), a cfg.toml, and `vvmm run/restore --cluster --node` launched in
each node's namespace, with each VM's console split out of the launcher's
prefixed output."""
import atexit
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import harness as h

_procs = []
_namespaces = []
_links = []
# Every VMM of a test has its workdir in its command line (the config path):
# that is how leftovers are found, without touching anyone else's VMMs.
PATTERN = "vvmm-test-cluster-%d-" % os.getpid()


@atexit.register
def _cleanup():
    for p in _procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    # The VMMs are in their own process groups (the launcher's children).
    subprocess.run(["pkill", "-9", "-f", PATTERN], stderr=subprocess.DEVNULL)
    for ns in _namespaces:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    for link in _links:
        subprocess.run(["ip", "link", "del", link], stderr=subprocess.DEVNULL)


def reference_module():
    spec = importlib.util.spec_from_file_location("reference", h.REFERENCE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ip(*args):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        h.fail("ip " + " ".join(args) + ": " + r.stderr.strip())


def require_netns():
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0 or os.geteuid() != 0:
        print("#" * 70, file=sys.stderr)
        print("# SKIPPED: network namespaces need root and iproute2 (ip netns):", file=sys.stderr)
        print("# " + (r.stderr.strip() or "not root"), file=sys.stderr)
        print("#" * 70, file=sys.stderr)
        sys.exit(h.SKIP)


def make_nodes(count):
    """count namespaces on one bridge; returns [(namespace, address)]."""
    tag = str(os.getpid() % 100000)
    bridge = "vvbr" + tag
    ip("link", "add", bridge, "type", "bridge")
    _links.append(bridge)
    ip("link", "set", bridge, "up")
    nodes = []
    subnet = 10 + os.getpid() % 200
    for i in range(count):
        ns = f"vvmm-t{tag}-n{i}"
        ip("netns", "add", ns)
        _namespaces.append(ns)
        host_end, ns_end = f"vv{tag}h{i}", f"vv{tag}n{i}"
        ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _links.append(host_end)
        ip("link", "set", ns_end, "netns", ns)
        ip("link", "set", host_end, "master", bridge)
        ip("link", "set", host_end, "up")
        address = f"10.{subnet}.0.{i + 1}"
        ip("-n", ns, "addr", "add", address + "/24", "dev", ns_end)
        ip("-n", ns, "link", "set", ns_end, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        nodes.append((ns, address))
    return nodes


def write_secret(workdir):
    """A fresh cluster secret, private as vvmm requires; returns its path."""
    path = os.path.join(workdir, "secret.key")
    with open(path, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(path, 0o600)
    return path


def write_config(path, name, nodes, placement, cmdlines, ckpt_dir, secret_path, mem="64M", port=7100,
                 kernel=None, initrd=None, ips=None, policy=""):
    """placement[i] = index of the node VM i runs on; the test guest unless
    kernel (and initrd) say otherwise; ips[i] the guest address of VM i.
    ckpt_dir None: no checkpoint_dir (storage = "memory" in policy, more
    [cluster] lines)."""
    kernel = os.path.abspath(kernel or h.TESTGUEST)
    ckpt_line = f'checkpoint_dir = "{ckpt_dir}"\n' if ckpt_dir else ""
    lines = [f'[cluster]\nname = "{name}"\nsecret_file = "{secret_path}"\n{ckpt_line}mode = "cow"\n{policy}']
    for i, (_, address) in enumerate(nodes):
        lines.append(f'[[node]]\nname = "n{i}"\naddress = "{address}"\n')
    for i, cmdline in enumerate(cmdlines):
        # A TOML literal string keeps a command line's double quotes as they are.
        quoted = f"'{cmdline}'" if '"' in cmdline else f'"{cmdline}"'
        lines.append(f'[[vm]]\nname = "vm{i}"\nnode = "n{placement[i]}"\nport = {port + i}\nmem = "{mem}"\n'
                     f'kernel = "{kernel}"\ncmdline = {quoted}\n'
                     f'mac = "52:54:00:cc:00:{i + 1:02x}"\n'
                     + (f'initrd = "{os.path.abspath(initrd)}"\n' if initrd else "")
                     + (f'ip = "{ips[i]}"\n' if ips else ""))
    with open(path, "w") as f:
        f.write("\n".join(lines))


class DisklessRing:
    """count nodes (network namespaces), one test=ring VM each, storage =
    "memory" with `redundancy` in sets of set_size, epochs every 2 s."""

    def __init__(self, count, name, redundancy, set_size):
        h.require_kvm(several_guests=True)
        require_netns()
        self.ref = reference_module()
        self.workdir = workdir()
        self.nodes = make_nodes(count)
        write_secret(self.workdir)
        self.mem = os.path.join(self.workdir, "mem")
        self.cfg = os.path.join(self.workdir, "cluster.toml")
        self.vms = [f"vm{i}" for i in range(count)]
        self.macs = [0x525400CC0001 + i for i in range(count)]
        cmdlines = [f"test=ring me={i} n={count} msix=1 irqwait=500" for i in range(count)]
        policy = (f'storage = "memory"\nmemory_dir = "{self.mem}"\nredundancy = "{redundancy}"\n'
                  f'set_size = {set_size}\ninterval = "2s"\n')
        write_config(self.cfg, name, self.nodes, list(range(count)), cmdlines, None, "secret.key", policy=policy)

    def records(self, node):
        """The epochs node has recorded, ascending."""
        names = os.listdir(os.path.join(self.mem, node, "epochs"))
        return sorted(int(n[:6]) for n in names if re.fullmatch(r"\d{6}\.json", n))

    def wait_recorded(self, node, at_least, launch, timeout=240):
        deadline = time.monotonic() + h.t(timeout)
        while not os.path.isdir(os.path.join(self.mem, node, "epochs")) or not self.records(node) \
                or self.records(node)[-1] < at_least:
            h.check(time.monotonic() < deadline, f"the cluster took no {at_least} epochs:\n" + launch.text()[-3000:])
            time.sleep(1)


class Launch:
    """`vvmm <sub> --cluster cfg --node nI` in node I's namespace, for every node."""

    def __init__(self, workdir, tag, cfg, nodes, sub, extra=(), only=None, pre=()):
        """only: the node indices to launch on (default: all); pre: options
        before the subcommand (--user NAME)."""
        self.procs = []
        self.outputs = []
        for i, (ns, _) in enumerate(nodes):
            if only is not None and i not in only:
                continue
            out = os.path.join(workdir, f"{tag}-n{i}.out")
            f = open(out, "w")
            # The config path carries PATTERN, so leftovers can be found.
            p = subprocess.Popen(["ip", "netns", "exec", ns, h.VVMM] + list(pre) + [sub, "--cluster", cfg, "--node", f"n{i}"]
                                 + list(extra), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            _procs.append(p)
            self.procs.append(p)
            self.outputs.append(out)

    def text(self):
        out = ""
        for path in self.outputs:
            with open(path, errors="replace") as f:
                out += f.read()
        return out

    def consoles(self):
        """{vm name: its console lines} from the launchers' prefixed output."""
        logs = {}
        for line in self.text().splitlines():
            m = re.match(r"(vm\d+)\s*\| (.*)", line)
            if m:
                logs.setdefault(m.group(1), []).append(m.group(2))
        return {k: "\n".join(v) + "\n" for k, v in logs.items()}

    def progress(self):
        """{vm: highest K of its `ring rx` lines}."""
        best = {}
        for vm, text in self.consoles().items():
            for m in re.finditer(r"tg: ring rx from=\d+ n=(\d+)", text):
                best[vm] = max(best.get(vm, 0), int(m.group(1)))
        return best

    def wait_progress(self, vms, at_least, timeout=60, what="ring traffic"):
        deadline = time.monotonic() + h.t(timeout)
        while time.monotonic() < deadline:
            p = self.progress()
            if all(p.get(v, 0) >= at_least.get(v, 0) if isinstance(at_least, dict) else p.get(v, 0) >= at_least
                   for v in vms):
                return p
            for proc in self.procs:
                if proc.poll() is not None:
                    h.fail(f"a launcher ended early ({what}):\n" + self.text()[-3000:])
            time.sleep(0.2)
        h.fail(f"no {what} within {timeout}s; progress {self.progress()}:\n" + self.text()[-3000:])

    def kill9(self):
        """Everything, at once: the launchers and every VMM (their own process groups).
        Returns once every VMM has finished exiting (its ports are free)."""
        vmms = _pids(PATTERN)
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", PATTERN], stderr=subprocess.DEVNULL)
        for p in self.procs:
            p.wait()
        deadline = time.monotonic() + h.t(10)
        # pgrep stops matching a dying process when its memory is gone, which
        # is before its sockets are closed: wait for each pid to end instead.
        while _pids(PATTERN) or any(_exiting(pid) for pid in vmms):
            if time.monotonic() > deadline:
                h.fail("VMMs survived kill -9")
            time.sleep(0.05)


def check_nothing_sent_to_rebuilder(text):
    """No restored VM's device may run before the barrier: a frame it sent
    would reach a VM still being rebuilt, whose stand-in cannot deliver it."""
    h.check("arrived before it runs" not in text,
            "a frame reached a VM still being rebuilt from parity:\n" + text[-3000:])


def check_ring_history(ref, history, macs):
    """Ring check over every console of every phase ([(phase, Launch)]), each
    its own log: a restore prints some lines again."""
    logs, index = {}, {}
    for phase, launch in history:
        for vm, text in launch.consoles().items():
            logs[f"{vm}@{phase}"] = text
            index[f"{vm}@{phase}"] = int(vm[2:])
    problems = ref.ring_check(logs, macs=macs, index=index)
    h.check(not problems, "ring check:\n  " + "\n  ".join(problems[:20]))


def wait_all_failed(launch, timeout=120):
    """For a launch that must fail: waits until a launcher ends, and checks
    that every one that ended failed."""
    deadline = time.monotonic() + h.t(timeout)
    while all(p.poll() is None for p in launch.procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    ended = [p for p in launch.procs if p.poll() is not None]
    h.check(ended and all(p.returncode != 0 for p in ended), "a launch that must fail went on:\n" + launch.text()[-3000:])


def _pids(pattern):
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def _exiting(pid):
    """True while pid exists and is not yet a zombie (a zombie has closed its files)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def workdir():
    import tempfile
    return tempfile.mkdtemp(prefix=PATTERN)


def vmm_pid(vm):
    """The pid of VM vm's VMM process."""
    r = subprocess.run(["pgrep", "-f", PATTERN + ".* --vm " + vm + "( |$)"], capture_output=True, text=True)
    pids = [int(x) for x in r.stdout.split()]
    if len(pids) != 1:
        h.fail(f"expected one VMM for {vm}, found {pids}")
    return pids[0]


def vvmm_in(ns, args, timeout=120):
    r = subprocess.run(["ip", "netns", "exec", ns, h.VVMM] + args, capture_output=True, text=True,
                       timeout=h.t(timeout))
    return r


def checkpoint_all(ns, cfg, mode, incremental=False, timeout_s=60):
    args = ["checkpoint", "--all", "--cluster", cfg, "--mode", mode, "--json", "--timeout", str(timeout_s)]
    if incremental:
        args.append("--incremental")
    r = vvmm_in(ns, args, timeout=timeout_s + 60)
    try:
        reply = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    except json.JSONDecodeError:
        reply = {}
    return r.returncode, reply, r.stderr
