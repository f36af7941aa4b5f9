#!/usr/bin/env bash
# The README's test command: every test (unit + integration on /dev/kvm), then
# one summary line "N passed, N failed, N skipped" read from meson's test log.
set -uo pipefail
cd "$(dirname "$0")/.."
[[ -f build/build.ninja ]] || { echo "tests/run.sh: run examples/setup-and-demo.sh (or scripts/build.sh) first" >&2; exit 1; }
meson test -C build --print-errorlogs "$@"
status=$?
python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0}
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    key = "OK" if r in ("OK", "EXPECTEDFAIL") else "SKIP" if r == "SKIP" else "FAIL"
    counts[key] += 1
print("%d passed, %d failed, %d skipped" % (counts["OK"], counts["FAIL"], counts["SKIP"]))
PY
exit $status
