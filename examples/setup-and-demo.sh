#!/usr/bin/env bash
# The README's first command: install dependencies, build everything, then run
# the demo (examples/demo.sh) on this host's /dev/kvm, or, on a host without
# one, inside the test host VM (tests/kvm-host/: a stock KVM under QEMU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
echo
# Where this host's /dev/kvm cannot boot the test guest (none, or a software
# backend that fails it), the demo runs on a stock KVM in the test host VM.
if ! why=$(tests/kvm-host/host-kvm-works build/vvmm build/guest/testguest.bzImage); then
    echo "== demo: $why: running the demo inside the test host VM (tests/kvm-host/run; emulated, so slower) =="
    # Several guests at once: single-threaded TCG (see tests/integration/harness.py).
    VVMM_KVM_HOST_TCG_THREAD=${VVMM_KVM_HOST_TCG_THREAD:-single} exec tests/kvm-host/run --timeout 1500 -- bash examples/demo.sh
fi
exec bash examples/demo.sh
