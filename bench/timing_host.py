"""Every benchmark asks first whether this machine's timing means anything.

Inside the test host VM (tests/kvm-host/: a stock KVM under QEMU's TCG
emulation) every instruction of vvmm, QEMU and the guest is emulated, 10-50x
slower and unevenly so: ratios measured there say nothing about either VMM.
Benchmarks run on a KVM with hardware virtualization or PVM, never there."""
import os
import sys


def in_test_host_vm():
    if os.environ.get("VVMM_KVM_HOST") == "1":
        return True
    try:
        with open("/proc/cmdline") as f:
            return "vvmm.kvm_host=1" in f.read().split()
    except OSError:
        return False


def refuse_emulated_timing(name):
    """Exits with status 2 and one line when run inside the test host VM."""
    if in_test_host_vm():
        print("%s: refusing to measure: this is the test host VM (QEMU TCG emulation), where timing is "
              "emulated and no ratio is meaningful; run benchmarks on a host with hardware KVM or PVM" % name,
              file=sys.stderr)
        sys.exit(2)
