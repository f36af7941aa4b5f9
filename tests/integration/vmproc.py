"""A vvmm process running in the background with a control socket and its
console in a file, for tests that checkpoint, kill and restore VMs."""
import atexit
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import harness as h


_started = []


@atexit.register
def _kill_leftovers():
    """A failed check exits the test at once: no VM it started may outlive it."""
    for p in _started:
        if p.poll() is None:
            p.kill()
            p.wait()


class Vm:
    def __init__(self, args, workdir, name, checkpoint_dir=""):
        """checkpoint_dir: the VMM's --checkpoint-dir, the only place its
        sandbox lets it write checkpoints ("": workdir; None: no such flag)."""
        self.workdir = workdir
        self.client = []  # options before the control subcommand (--user NAME)
        if checkpoint_dir is not None and "--checkpoint-dir" not in args:
            args = list(args) + ["--checkpoint-dir", checkpoint_dir or workdir]
        self.api = os.path.join(workdir, name + ".sock")
        self.console = os.path.join(workdir, name + ".console")
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([h.VVMM] + args + ["--api", self.api, "--console", "file:" + self.console],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr)
        _started.append(self.proc)
        deadline = time.monotonic() + h.t(20)
        while not os.path.exists(self.api):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                h.fail("vvmm did not start its API socket:\n" + self.describe())
            time.sleep(0.01)

    @classmethod
    def boot(cls, workdir, name, cmdline, cpus=1, mem="256M", extra=(), checkpoint_dir=""):
        return cls(["run", "--kernel", h.TESTGUEST, "--cpus", str(cpus), "--mem", mem, "--cmdline", cmdline]
                   + list(extra), workdir, name, checkpoint_dir)

    @classmethod
    def restore(cls, workdir, name, ckpt_dir, extra=()):
        return cls(["restore", "--dir", ckpt_dir] + list(extra), workdir, name)

    def check_sandboxed(self, what):
        """The running VMM is sandboxed (vmm/sandbox.hpp): seccomp filter,
        no_new_privs, and no capability but CAP_IPC_LOCK and CAP_SYS_PTRACE."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            fields = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
        kept = (1 << 14) | (1 << 19)
        h.check(fields.get("Seccomp") == "2" and fields.get("NoNewPrivs") == "1" and
                int(fields.get("CapEff", "0"), 16) & ~kept == 0 and int(fields.get("CapBnd", "0"), 16) & ~kept == 0,
                "%s: vvmm is not sandboxed: Seccomp=%s NoNewPrivs=%s CapEff=%s CapBnd=%s" %
                (what, fields.get("Seccomp"), fields.get("NoNewPrivs"), fields.get("CapEff"), fields.get("CapBnd")))

    def text(self):
        try:
            with open(self.console, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def lines(self):
        """Complete guest lines so far (a line cut by a checkpoint is dropped)."""
        text = self.text().replace("\r", "")
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        return [l for l in text.split("\n") if l.startswith("tg: ")]

    def wait_for(self, pattern, count=1, timeout=60):
        deadline = time.monotonic() + h.t(timeout)
        while True:
            found = [l for l in self.lines() if re.search(pattern, l)]
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                h.fail("vvmm exited (%s) while waiting for %r:\n%s" % (self.proc.returncode, pattern, self.describe()))
            if time.monotonic() > deadline:
                h.fail("timed out waiting for %d x %r:\n%s" % (count, pattern, self.describe()))
            time.sleep(0.02)

    def call(self, *args, timeout=600):
        """Runs `vvmm <args> --api SOCK --json`; returns the reply object."""
        r = subprocess.run([h.VVMM] + self.client + list(args) + ["--api", self.api, "--json"], capture_output=True, text=True,
                           timeout=timeout)
        try:
            reply = json.loads(r.stdout)
        except ValueError:
            h.fail("vvmm %s printed no JSON (status %d): %s %s" % (args[0], r.returncode, r.stdout, r.stderr))
        return reply

    def checkpoint(self, ckpt_root, mode="stop", incremental=False):
        args = ["checkpoint", "--dir", ckpt_root, "--mode", mode] + (["--incremental"] if incremental else [])
        reply = self.call(*args)
        h.check(reply.get("ok") is True, "checkpoint %s failed: %s\n%s" % (mode, reply, self.describe()))
        return reply

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.stderr.close()

    def stop(self):
        if self.proc.poll() is None:
            self.call("stop")
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        if not self.stderr.closed:
            self.stderr.close()
        return self.proc.returncode

    def describe(self):
        with open(self.stderr_path, errors="replace") as f:
            err = f.read()
        return "--- console (tail) ---\n%s\n--- stderr ---\n%s" % (self.text()[-3000:], err[-2000:])


def workdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("VVMM_TEST_TMP", "/var/tmp"))


def count_steps(lines, cpu=None):
    """{n: sum} of the count lines (of one CPU if given)."""
    out = {}
    pat = re.compile(r"^tg: count (?:cpu=(\d+) )?n=(\d+) sum=([0-9a-f]{16})$")
    for l in lines:
        m = pat.match(l)
        if m and (cpu is None or m.group(1) == str(cpu)):
            out[int(m.group(2))] = m.group(3)
    return out


class CountReference:
    """Recomputes count sums in this process (reference.py as a module)."""

    def __init__(self, mb):
        import importlib.util
        spec = importlib.util.spec_from_file_location("tg_reference", h.REFERENCE)
        self.mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.mod)
        self.mb = mb
        self.cache = {}

    def sum(self, n):
        if n not in self.cache:
            self.cache[n] = "%016x" % self.mod.count_sum(n, self.mb)
        return self.cache[n]
