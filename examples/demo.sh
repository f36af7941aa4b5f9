#!/usr/bin/env bash
# The demo: boot the test guest with 4 vCPUs and let it reboot, checkpoint and
# restore one VM, then run a small cluster, checkpoint it, kill it and restore
# it. Needs a built tree (scripts/build.sh) and a /dev/kvm.
set -euo pipefail
cd "$(dirname "$0")/.."
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
