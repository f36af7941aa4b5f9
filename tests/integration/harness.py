"""Shared helpers for integration tests: find the binaries, skip loudly when
there is no /dev/kvm, run vvmm with a deadline and collect its output."""
import os
import re
import subprocess
import sys
import time

SKIP = 77

VVMM = os.environ.get("VVMM", "build/vvmm")
TESTGUEST = os.environ.get("TESTGUEST", "build/guest/testguest.bzImage")
GUEST_DIR = os.environ.get("GUEST_DIR", "build/guest")
REFERENCE = os.environ.get("TESTGUEST_REFERENCE", "guest-images/testguest/reference.py")


def require_kvm():
    if not os.path.exists("/dev/kvm"):
        print("#" * 70, file=sys.stderr)
        print("# SKIPPED: /dev/kvm does not exist on this host; this test boots a real", file=sys.stderr)
        print("# guest and cannot run without KVM.", file=sys.stderr)
        print("#" * 70, file=sys.stderr)
        sys.exit(SKIP)


def require_hardware_virtualization(what_covers_it_here):
    """Full Linux boots need VT-x/AMD-V; on a PVM host (software nested
    virtualization) guest kernel code is emulated and a boot takes hours."""
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    if " vmx" in flags or " svm" in flags:
        return
    print("#" * 70, file=sys.stderr)
    print("# SKIPPED: this host has no VT-x/AMD-V (its /dev/kvm is a software backend", file=sys.stderr)
    print("# such as PVM, where a full Linux boot takes hours).", file=sys.stderr)
    print("# Covered here instead by: " + what_covers_it_here, file=sys.stderr)
    print("#" * 70, file=sys.stderr)
    sys.exit(SKIP)


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def check(cond, message):
    if not cond:
        fail(message)


class Result:
    def __init__(self, status, stdout, stderr, seconds):
        self.status, self.stdout, self.stderr, self.seconds = status, stdout, stderr, seconds

    def lines(self, prefix="tg: "):
        return [l.strip() for l in self.stdout.replace("\r", "").split("\n") if l.strip().startswith(prefix)]

    def line(self, pattern):
        """The first guest line matching the regex, as a match object."""
        for l in self.lines():
            m = re.search(pattern, l)
            if m:
                return m
        return None

    def describe(self):
        return "status=%s after %.1fs\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
            self.status, self.seconds, self.stdout[-4000:], self.stderr[-2000:])


def run_vvmm(args, timeout=60, stdin=subprocess.DEVNULL):
    """Runs vvmm to completion (or kills it at the deadline, status None)."""
    start = time.monotonic()
    p = subprocess.Popen([VVMM] + args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, errors="replace")
    try:
        out, err = p.communicate(timeout=timeout)
        status = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        status = None
    return Result(status, out, err, time.monotonic() - start)


def run_guest(cmdline, cpus=1, mem="256M", timeout=60, extra=()):
    return run_vvmm(["run", "--kernel", TESTGUEST, "--cpus", str(cpus), "--mem", mem,
                     "--cmdline", cmdline] + list(extra), timeout=timeout)


def reference(*args):
    out = subprocess.run([sys.executable, REFERENCE] + [str(a) for a in args], check=True,
                         capture_output=True, text=True).stdout
    return out.strip()


def parse_size(text):
    units = {"K": 10, "M": 20, "G": 30}
    return int(text[:-1]) << units[text[-1]] if text[-1] in units else int(text)
