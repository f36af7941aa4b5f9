"""Shared helpers for integration tests: find the binaries, run each test on a
KVM that can run it (here, or in the test host VM), run vvmm with a deadline
and collect its output."""
import os
import re
import subprocess
import sys
import time

SKIP = 77  # meson: skipped

VVMM = os.environ.get("VVMM", "build/vvmm")
TESTGUEST = os.environ.get("TESTGUEST", "build/guest/testguest.bzImage")
GUEST_DIR = os.environ.get("GUEST_DIR", "build/guest")
REFERENCE = os.environ.get("TESTGUEST_REFERENCE", "guest-images/testguest/reference.py")


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KVM_HOST_RUN = os.path.join(REPO, "tests", "kvm-host", "run")
# Set by tests/kvm-host/run inside the test host VM (a stock KVM under QEMU TCG).
IN_KVM_HOST = os.environ.get("VVMM_KVM_HOST") == "1"
# Timing inside the test host VM is emulated, 10-50x slower: every deadline a
# test waits on (guest output, vvmm exiting, replies) is multiplied by this.
SCALE = float(os.environ.get("VVMM_TIMEOUT_SCALE", "10" if IN_KVM_HOST else "1"))


def t(seconds):
    """A deadline in seconds, scaled for the machine the test runs on."""
    return seconds * SCALE


def guest_irqwait():
    """The test guest's irqwait= (ms a used entry may wait for its MSI-X
    interrupt before it reports one missed): 20 ms, scaled like every other
    deadline. In the test host VM an interrupt's way through vvmm, irqfd and
    the emulated SVM took over 20 ms for 2 of 29 waits; a lost one still shows."""
    return "irqwait=%d" % (20 * SCALE)


def hardware_virtualization():
    """VT-x/AMD-V: guest kernel code runs at hardware speed. A PVM-backed
    /dev/kvm has neither flag and emulates guest kernel mode ~3000x slower."""
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    return " vmx" in flags or " svm" in flags


# A Linux guest never triple-faults on a sound KVM, but under the test host VM's
# multi-threaded TCG one 2-vCPU boot in a few met it (the SVM emulation race of
# ../shared/notes/test-host-vm.md): tests/kvm-host/run retries such a run (up to
# three runs in all, see run_in_kvm_host).
LINUX_EMULATION_FAULT = r"vvmm: error: vCPU \d+: triple fault \(KVM_EXIT_SHUTDOWN\)"


def run_in_kvm_host(why, several_guests=False, retry_if=None, shadow_paging=False):
    """Re-runs this very test inside the test host VM (tests/kvm-host/), which
    offers a stock KVM on any machine; its exit status becomes ours. Tests
    that run several guests at once use single-threaded TCG: with QEMU's
    multi-threaded TCG they met guest triple faults and crashes of the VM's
    own kernel (stack guard page hit in exc_page_fault), an emulation race.
    Linux-guest tests cannot afford it (see require_hardware_virtualization).

    shadow_paging: load kvm_amd with npt=0 in there. The race is mostly in QEMU
    7.2's emulation of nested paging: with shadow paging, several Linux guests
    at once passed 10 of 12 runs instead of almost none (tests/kvm-host/README.md)."""
    if IN_KVM_HOST:
        fail("inside the test host VM, and still " + why)
    if several_guests:
        os.environ.setdefault("VVMM_KVM_HOST_TCG_THREAD", "single")
    if shadow_paging:
        os.environ["VVMM_KVM_HOST_APPEND"] = (os.environ.get("VVMM_KVM_HOST_APPEND", "") + " kvm_amd.npt=0").strip()
    budget = int(os.environ.get("VVMM_TEST_TIMEOUT", "1200"))
    print("kvm-host: %s; running %s in the test host VM (tests/kvm-host/run)%s"
          % (why, os.path.basename(sys.argv[0]), ", kvm_amd with npt=0" if shadow_paging else ""), flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Up to three runs: CI runs met two emulation faults in a row (linux_checkpoint: the VM's
    # kernel crashed, then the guest triple-faulted; checkpoint: two stopped CPUs or crashes).
    runs, retry = 3, ["--retries", "2"]
    if retry_if and os.environ.get("VVMM_KVM_HOST_TCG_THREAD") != "single":
        retry += ["--retry-if", retry_if]
    os.execv(KVM_HOST_RUN, [KVM_HOST_RUN, "--timeout", str(max(60, budget * 9 // (10 * runs)))] + retry + ["--",
                            sys.executable] + sys.argv)


def require_kvm(several_guests=False):
    """Test-guest tests: any /dev/kvm that boots the test guest runs them (it
    does its work in CPL 3, native even on PVM); else the test host VM does.
    A software-backed /dev/kvm is probed first: some PVM builds fail the
    guest at random before its first instruction (tests/kvm-host/host-kvm-works)."""
    if not os.path.exists("/dev/kvm"):
        run_in_kvm_host("this host has no /dev/kvm", several_guests)
    if not IN_KVM_HOST and not hardware_virtualization():
        # tests/run.sh probes once for the whole run, so every test agrees.
        verdict = os.environ.get("VVMM_HOST_KVM")
        if verdict is None:
            probe = subprocess.run([os.path.join(REPO, "tests", "kvm-host", "host-kvm-works"), VVMM, TESTGUEST],
                                   capture_output=True, text=True)
            verdict = "ok" if probe.returncode == 0 else (probe.stdout.strip() or "the host KVM probe failed")
        if verdict != "ok":
            run_in_kvm_host(verdict, several_guests)


def require_hardware_virtualization(several_guests=False):
    """Linux guests need guest kernel code at hardware speed: here if the
    host's /dev/kvm has VT-x/AMD-V, else in the test host VM.

    several_guests: the test runs several Linux guests at once. In the test
    host VM that crashed the VM's own kernel in most runs with nested paging
    (the emulation race of ../shared/notes/test-host-vm.md) and was too slow
    under single-threaded TCG, so there such a test runs with shadow paging."""
    if not os.path.exists("/dev/kvm"):
        run_in_kvm_host("this host has no /dev/kvm", retry_if=LINUX_EMULATION_FAULT, shadow_paging=several_guests)
    if not hardware_virtualization():
        run_in_kvm_host("this host's /dev/kvm has no VT-x/AMD-V (PVM: a Linux boot would take hours)",
                        retry_if=LINUX_EMULATION_FAULT, shadow_paging=several_guests)


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
    timeout = t(timeout)
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
