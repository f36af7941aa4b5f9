"""test=count rewrites a large memory area every step and checksums it; the
host recomputes every checksum. This is the workload the checkpoint tests use."""
import harness as h

h.require_kvm()

r = h.run_guest("test=count steps=4 mb=32", cpus=1, mem="256M", timeout=120)
h.check(r.status == 0, "test=count did not exit 0:\n" + r.describe())
steps = [l for l in r.lines() if l.startswith("tg: count n=")]
h.check(len(steps) == 4, "expected 4 steps:\n" + r.describe())
for n, line in enumerate(steps, start=1):
    expected = "tg: count n=%d sum=%s" % (n, h.reference("count", n, 32))
    h.check(line == expected, "step %d: %r, expected %r" % (n, line, expected))
h.check(not any("error" in l for l in r.lines()), "guest reported a memory error:\n" + r.describe())
print("ok: 4 steps, checksums match the host's")
