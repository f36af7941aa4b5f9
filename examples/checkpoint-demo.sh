#!/usr/bin/env bash
# Checkpoint, kill -9 and restore one VM: the test guest counts (and checks
# its memory) step by step; after the restore it goes on from the step it was
# at when the checkpoint was taken.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /var/tmp/vvmm-demo-XXXXXX)
vmm=""
cleanup() { [ -n "$vmm" ] && kill -9 "$vmm" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
last_step() { grep -o 'count n=[0-9]*' "$1" | tail -1 || true; }
wait_steps() {  # FILE N: wait until the console shows N more steps
    local want=$(( $(grep -c 'count n=' "$1" || true) + $2 ))
    for _ in $(seq 1 300); do [ "$(grep -c 'count n=' "$1" || true)" -ge "$want" ] && return 0; sleep 0.1; done
    echo "demo: the guest made no progress" >&2; return 1
}

echo "\$ build/vvmm run --kernel build/guest/testguest.bzImage --mem 256M --cmdline \"test=count mb=16 delay=200\" --api $work/a.sock --console file:$work/a.log --checkpoint-dir $work/ckpts &"
build/vvmm run --kernel build/guest/testguest.bzImage --mem 256M --cmdline "test=count mb=16 delay=200" \
    --api "$work/a.sock" --console "file:$work/a.log" --checkpoint-dir "$work/ckpts" </dev/null &
vmm=$!
while [ ! -S "$work/a.sock" ]; do sleep 0.05; done
wait_steps "$work/a.log" 3
echo "   guest console: ... $(last_step "$work/a.log")"
echo "\$ build/vvmm checkpoint --api $work/a.sock --mode cow"
build/vvmm checkpoint --api "$work/a.sock" --mode cow
at=$(last_step "$work/a.log")
wait_steps "$work/a.log" 3
echo "   guest console: ... $(last_step "$work/a.log") (it went on after the checkpoint)"
echo "\$ kill -9 $vmm"
kill -9 "$vmm"; wait "$vmm" 2>/dev/null || true; vmm=""
echo "\$ build/vvmm restore --dir $work/ckpts/000001 --api $work/b.sock --console file:$work/b.log &"
build/vvmm restore --dir "$work/ckpts/000001" --api "$work/b.sock" --console "file:$work/b.log" </dev/null &
vmm=$!
while [ ! -S "$work/b.sock" ]; do sleep 0.05; done
wait_steps "$work/b.log" 3
echo "   restored guest console (checkpoint taken at $at):"
grep 'count n=' "$work/b.log" | head -3 | sed 's/^/     /'
build/vvmm stop --api "$work/b.sock"
wait "$vmm" 2>/dev/null || true; vmm=""
