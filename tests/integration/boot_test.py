"""The test guest boots with 1, 2 and 4 vCPUs: every CPU comes up, the RAM the
guest counts in its e820 map matches --mem, the command line arrives whole,
and the guest's reboot ends vvmm with status 0."""
import harness as h

h.require_kvm()

# vvmm reserves the EBDA/BIOS window 0x9fc00..0x100000 in e820; all else is RAM.
RESERVED = 0x100000 - 0x9FC00

for cpus, mem in ((1, "256M"), (2, "512M"), (4, "1G")):
    r = h.run_guest("test=boot marker=abc-%d" % cpus, cpus=cpus, mem=mem)
    h.check(r.status == 0, "test=boot with %d vCPUs did not exit 0:\n%s" % (cpus, r.describe()))
    ready = r.line(r'^tg: ready cpus=(\d+) ram=(\d+) cmdline="(.*)"$')
    h.check(ready is not None, "no ready line:\n" + r.describe())
    h.check(int(ready.group(1)) == cpus, "guest saw %s CPUs, expected %d" % (ready.group(1), cpus))
    h.check(int(ready.group(2)) == h.parse_size(mem) - RESERVED,
            "guest RAM %s != --mem %s minus the BIOS window" % (ready.group(2), mem))
    h.check(ready.group(3) == "console=ttyS0 reboot=k panic=-1 acpi=off test=boot marker=abc-%d" % cpus,
            "command line arrived as %r" % ready.group(3))
    h.check(r.line(r"^tg: boot ok$") is not None, "no 'boot ok':\n" + r.describe())
    print("ok: %d vCPU(s), %s, %.2fs" % (cpus, mem, r.seconds))

# RAM above the 32-bit PCI hole is placed above 4 GiB and still counted.
r = h.run_guest("test=boot", cpus=1, mem="4G")
ready = r.line(r"^tg: ready cpus=(\d+) ram=(\d+)")
h.check(r.status == 0 and ready is not None, "4G boot failed:\n" + r.describe())
h.check(int(ready.group(2)) == (4 << 30) - RESERVED, "4G guest counted %s bytes" % ready.group(2))
print("ok: 4G with RAM above 4 GiB")
