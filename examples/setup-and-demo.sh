#!/usr/bin/env bash
# The README's first command: install dependencies, build everything, boot the
# test guest with 4 vCPUs on /dev/kvm and let it reboot, checkpoint and restore
# one VM, then run a small cluster, checkpoint it, kill it and restore it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
echo
if [[ ! -c /dev/kvm ]]; then
    # Same rule as the integration tests: say so loudly, do not fail the build.
    echo "######################################################################"
    echo "# SKIPPED the demo: /dev/kvm does not exist on this host, so no guest"
    echo "# can boot here. vvmm is built (build/vvmm); run this script again on"
    echo "# a host with KVM (or nested virtualization) to see it boot guests."
    echo "######################################################################"
    exit 0
fi
echo "== demo: booting the test guest with 4 vCPUs (it runs test=smp and reboots) =="
echo "\$ build/vvmm run --kernel build/guest/testguest.bzImage --cpus 4 --mem 512M --cmdline \"test=smp\""
build/vvmm run --kernel build/guest/testguest.bzImage --cpus 4 --mem 512M --cmdline "test=smp" </dev/null
echo "== demo: the guest rebooted and vvmm exited with status $? =="
echo
echo "== demo: checkpoint a running VM, kill -9 it, restore it =="
examples/checkpoint-demo.sh
echo
echo "== demo: a cluster of 3 VMs passing messages: checkpoint all, kill -9 all, restore all =="
examples/cluster-demo.sh
echo "== demo: done =="
