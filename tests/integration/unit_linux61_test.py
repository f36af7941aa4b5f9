"""The unit suite (KVM probes of uffd write-protect, dirty logging, memory
and vCPU state included) on Debian 12's own kernel, 6.1, the baseline users
run: inside the test host VM, whatever kernel this machine has."""
import os
import subprocess
import sys

import harness as h

UNIT = os.path.join(os.path.dirname(h.VVMM), "tests", "unit_tests")
if not h.IN_KVM_HOST:
    with open("/proc/sys/kernel/osrelease") as f:
        release = f.read().strip()
    if not release.startswith("6.1."):
        h.run_in_kvm_host("this host runs Linux %s, not Debian 12's 6.1" % release)
sys.exit(subprocess.call([UNIT]))
