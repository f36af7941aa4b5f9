#!/usr/bin/env bash
# A small cluster (examples/cluster.toml: 3 test-guest VMs on this host)
# boots, passes numbered messages around (test=ring: every VM streams to
# every other, flow-controlled, never retransmitted, so a lost or doubled
# Ethernet frame would be an error), is checkpointed as a whole, killed with
# kill -9 and restored: the guests carry on with their message streams.
set -euo pipefail
cd "$(dirname "$0")/.."
cfg=examples/cluster.toml
if [ "${VVMM_KVM_HOST:-}" = 1 ]; then
    # In the test host VM the repo is on 9p, which has no renameat2(RENAME_NOREPLACE)
    # (checkpoints are published with it): keep them on the VM's tmpfs instead.
    sed 's|^checkpoint_dir = .*|checkpoint_dir = "/var/tmp/vvmm-demo-ckpt"|' examples/cluster.toml > examples/.cluster-kvm-host.toml
    cfg=examples/.cluster-kvm-host.toml
fi
if [ ! -f examples/demo.key ]; then  # the cluster's shared secret (never commit it)
    head -c 32 /dev/urandom > examples/demo.key
    chmod 600 examples/demo.key
fi
work=$(mktemp -d /var/tmp/vvmm-cluster-demo-XXXXXX)
kill_all() {
    pkill -9 -f "vvmm (run|restore) --cluster $cfg" 2>/dev/null || true
    while pgrep -f "vvmm (run|restore) --cluster $cfg" >/dev/null; do sleep 0.05; done
}
cleanup() { kill_all; rm -rf "$work"; }
trap cleanup EXIT
rm -rf build/demo-ckpt  # the checkpoint_dir of examples/cluster.toml

messages() { grep -o "$2| tg: ring rx from=[0-9]* n=[0-9]*" "$1" | "$3" -1 | sed 's/.*| tg: //' || true; }
wait_messages() {  # FILE: wait until every VM has reported N more received messages
    local want=$(( $(grep -c 'tg: ring rx' "$1" || true) + $2 ))
    for _ in $(seq 1 600); do [ "$(grep -c 'tg: ring rx' "$1" || true)" -ge "$want" ] && return 0; sleep 0.1; done
    echo "demo: the cluster made no progress:" >&2; tail -20 "$1" >&2; return 1
}
show() { for vm in vm0 vm1 vm2; do echo "   $vm: ${2:-...} $(messages "$1" $vm "${3:-tail}")"; done; }

echo "\$ build/vvmm run --cluster $cfg &"
build/vvmm run --cluster "$cfg" > "$work/run.log" 2>&1 </dev/null &
disown
wait_messages "$work/run.log" 12
show "$work/run.log"
echo "\$ build/vvmm checkpoint --all --cluster $cfg --mode cow"
build/vvmm checkpoint --all --cluster "$cfg" --mode cow
wait_messages "$work/run.log" 6
echo "   (the cluster went on after the checkpoint)"
show "$work/run.log"
echo "\$ build/vvmm list --cluster $cfg"
build/vvmm list --cluster "$cfg"
echo "\$ kill -9 every VMM of the cluster"
kill_all
echo "\$ build/vvmm restore --cluster $cfg &"
build/vvmm restore --cluster "$cfg" > "$work/restore.log" 2>&1 </dev/null &
launcher=$!
disown
wait_messages "$work/restore.log" 12
echo "   restored consoles: the streams go on from where they were at the checkpoint, without a gap or a repeat"
show "$work/restore.log" "first report after the restore:" head
show "$work/restore.log" "a little later:" tail
errors=$(cat "$work/run.log" "$work/restore.log" | grep -c 'ring error\|ring fail' || true)
echo "   ring errors (lost, doubled or corrupt messages) before and after: $errors"
kill -INT "$launcher"
while kill -0 "$launcher" 2>/dev/null; do sleep 0.05; done
grep '^vvmm: vm' "$work/restore.log" | sed 's/^/   /'
[ "$errors" = 0 ]
