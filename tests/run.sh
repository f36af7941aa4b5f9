#!/usr/bin/env bash
# The README's test command: every test (unit, then integration tests on a KVM
# that can run them: this host's, or the test host VM's), then one summary line
# "N passed, N failed, N skipped" read from meson's test log.
set -uo pipefail
cd "$(dirname "$0")/.."
[[ -f build/build.ninja ]] || { echo "tests/run.sh: run examples/setup-and-demo.sh (or scripts/build.sh) first" >&2; exit 1; }
# Whether this host's /dev/kvm boots the test guest reliably, decided once for
# every test of this run (harness.py; tests/kvm-host/host-kvm-works).
ninja -C build >/dev/null || exit 1
if [[ -z ${VVMM_HOST_KVM:-} ]]; then
    if VVMM_HOST_KVM=$(tests/kvm-host/host-kvm-works build/vvmm build/guest/testguest.bzImage); then
        VVMM_HOST_KVM=ok
    else
        echo "tests/run.sh: $VVMM_HOST_KVM: KVM tests run in the test host VM"
    fi
    export VVMM_HOST_KVM
fi
meson test -C build --print-errorlogs "$@"
status=$?
python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0}
in_vm, retried = [], []
for line in open(sys.argv[1]):
    t = json.loads(line)
    r = t["result"]
    key = "OK" if r in ("OK", "EXPECTEDFAIL") else "SKIP" if r == "SKIP" else "FAIL"
    counts[key] += 1
    out = (t.get("stdout") or "") + (t.get("stderr") or "")
    if "kvm-host: running" in out:
        in_vm.append(t["name"])
    if "kvm-host: retried" in out:
        retried.append(t["name"])
if in_vm:
    print("ran in the test host VM (tests/kvm-host/): " + " ".join(in_vm))
print("retried after a crash or hang of the test host VM itself (or a Linux guest's triple fault under its multi-threaded TCG): %d%s"
      % (len(retried), (" (" + " ".join(retried) + ")") if retried else ""))
print("%d passed, %d failed, %d skipped" % (counts["OK"], counts["FAIL"], counts["SKIP"]))
PY
exit $status
