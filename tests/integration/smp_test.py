"""Every vCPU of a 4-vCPU guest runs its own computation and reports a result
that the host recomputes independently (guest-images/testguest/reference.py)."""
import harness as h

h.require_kvm()

for cpus in (2, 4):
    iters = 2000000
    r = h.run_guest("test=smp iters=%d" % iters, cpus=cpus, timeout=120)
    h.check(r.status == 0, "test=smp did not exit 0:\n" + r.describe())
    seen = {}
    for line in r.lines():
        m = __import__("re").match(r"tg: smp cpu=(\d+) apic=(\d+) result=([0-9a-f]+)$", line)
        if m:
            seen[int(m.group(1))] = (int(m.group(2)), m.group(3))
    h.check(sorted(seen) == list(range(cpus)), "CPUs that reported: %s\n%s" % (sorted(seen), r.describe()))
    for cpu, (apic, result) in seen.items():
        h.check(apic == cpu, "cpu %d has APIC id %d (vvmm assigns APIC id = vCPU index)" % (cpu, apic))
        expected = h.reference("smp", cpu, iters)
        h.check(result == expected, "cpu %d computed %s, expected %s" % (cpu, result, expected))
    h.check(r.line(r"^tg: smp ok cpus=%d$" % cpus) is not None, "no 'smp ok':\n" + r.describe())
    print("ok: %d CPUs all computed the right result" % cpus)

# A guest moves a virtio BAR (one vCPU, PCI config writes) while its other vCPU
# reads that BAR (MMIO). vvmm once remapped the BAR under the device's lock
# while the reading vCPU, inside the MMIO map, waited for that lock: vvmm hung.
import os
import tempfile

with tempfile.TemporaryDirectory() as tmp:
    disk = os.path.join(tmp, "disk.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    r = h.run_guest("test=barmove moves=400", cpus=2, timeout=120, extra=["--disk", "path=" + disk])
    h.check(r.status == 0 and r.line(r"^tg: barmove ok moves=400 reads=\d+ readers=1$") is not None,
            "test=barmove did not finish (a hang is a deadlock in BAR remapping):\n" + r.describe())
    print("ok: a vCPU moved a virtio BAR 400 times while another read it")
