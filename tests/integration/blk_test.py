"""virtio-blk with the test guest's own driver: it writes a known pattern to a
disk and the host checks the image file; the data survives into a second VM
(a reboot); a read-only disk refuses writes with IOERR and stays unchanged;
GET_ID returns the serial."""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

import harness as h

h.require_kvm()
tmp = tempfile.mkdtemp(prefix="vvmm-blk-")
data = os.path.join(tmp, "data.img")
ro = os.path.join(tmp, "ro.img")
with open(data, "wb") as f:
    f.truncate(64 << 20)
with open(ro, "wb") as f:
    f.write(os.urandom(1 << 20))
ro_hash = hashlib.sha256(open(ro, "rb").read()).hexdigest()

seed, start, sectors = 7, 2048, 4096
disks = ["--disk", "path=%s,id=data-disk" % data, "--disk", "path=%s,readonly=on,id=ro-disk" % ro]
r = h.run_guest("test=blk seed=%d start=%d sectors=%d" % (seed, start, sectors), mem="256M", timeout=120, extra=disks)
h.check(r.status == 0, "test=blk failed:\n" + r.describe())
d0 = r.line(r"^tg: blk disk=0 capacity=(\d+) ro=0 id=(\S*)")
d1 = r.line(r"^tg: blk disk=1 capacity=(\d+) ro=1 id=(\S*)")
h.check(d0 and int(d0.group(1)) == (64 << 20) // 512, "disk 0 capacity/ro wrong:\n" + r.describe())
h.check(d0.group(2) == "data-disk", "GET_ID returned %r" % d0.group(2))
h.check(d1 and int(d1.group(1)) == (1 << 20) // 512 and d1.group(2) == "ro-disk", "disk 1 wrong:\n" + r.describe())
h.check(r.line(r"^tg: blk write ok sectors=%d$" % sectors), "no write ok:\n" + r.describe())
h.check(r.line(r"^tg: blk verify ok$"), "guest read back something else:\n" + r.describe())
h.check(r.line(r"^tg: blk ro-write status=1( |$)"), "read-only disk did not answer IOERR:\n" + r.describe())
h.check(r.line(r"^tg: blk ok$"), r.describe())

# The host sees exactly the pattern in the image file.
check = subprocess.run([sys.executable, h.REFERENCE, "blkcheck", data, str(seed), str(start), str(sectors)],
                       capture_output=True, text=True)
h.check(check.returncode == 0, "image file does not hold the pattern: %s%s" % (check.stdout, check.stderr))
# Nothing outside the range was touched.
with open(data, "rb") as f:
    h.check(f.read(start * 512) == bytes(start * 512), "bytes before the written range changed")
h.check(hashlib.sha256(open(ro, "rb").read()).hexdigest() == ro_hash, "the read-only image changed")
print("ok: pattern written, checked on the host, read-only disk refused (%.1fs)" % r.seconds)

# A new VM (a reboot) reads the same data back.
r = h.run_guest("test=blkverify seed=%d start=%d sectors=%d" % (seed, start, sectors), mem="256M", timeout=120,
                extra=disks)
h.check(r.status == 0 and r.line(r"^tg: blk verify ok$"), "data did not survive a reboot:\n" + r.describe())
print("ok: data survives a reboot")

# The same with MSI-X interrupts (irqfd + KVM routing) driving completion, and
# a masked vector that must pend (PBA bit) and fire on unmask.
r = h.run_guest("test=blk seed=%d start=%d sectors=%d msix=1 %s" % (seed + 1, start, sectors, h.guest_irqwait()), mem="256M",
                timeout=120, extra=disks)
h.check(r.status == 0 and r.line(r"^tg: blk verify ok$") and r.line(r"^tg: msix mask ok"),
        "test=blk msix=1 failed:\n" + r.describe())
irq = r.line(r"^tg: msix dev=\S+ vectors=\d+ interrupts=(\d+)")
h.check(irq and int(irq.group(1)) > 0, "no MSI-X interrupts counted:\n" + r.describe())
h.check(not any("msix fail" in l for l in r.lines()), r.describe())
print("ok: MSI-X: %s interrupts, masked vector pended and fired on unmask" % irq.group(1))

# A missing image is a clear start-up error.
r = h.run_vvmm(["run", "--kernel", h.TESTGUEST, "--disk", "path=" + os.path.join(tmp, "nope.img")], timeout=30)
h.check(r.status not in (0, None) and "cannot open disk image" in r.stderr and r.stderr.count("\n") == 1,
        "missing image: %r" % r.stderr)
print("ok:", r.stderr.strip())
shutil.rmtree(tmp)
