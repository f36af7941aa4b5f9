"""Debian's stock kernel (the uncompressed vmlinux extracted from its bzImage)
boots under vvmm far enough to print its banner, our command line, our e820
map and our MP table. On this project's PVM development hosts the kernel's
supervisor code is emulated ~3000x slower, so this needs ~10-20 s and we stop
the guest as soon as the lines appear (bounded at 240 s)."""
import os
import re
import signal
import subprocess
import time

import harness as h

h.require_kvm()
vmlinux = os.path.join(h.GUEST_DIR, "vmlinux")
h.check(os.path.exists(vmlinux), "%s is missing: run guest-images/linux/build.sh (the README's setup does)" % vmlinux)

wanted = {
    "banner": r"Linux version \d+\.\d+",
    "command line": r"Command line: console=ttyS0 reboot=k panic=-1 acpi=off earlyprintk=serial,ttyS0,115200 vvmm-smoke",
    "e820 low": r"BIOS-e820: \[mem 0x0000000000000000-0x000000000009fbff\] usable",
    "e820 reserved": r"BIOS-e820: \[mem 0x000000000009fc00-0x00000000000fffff\] reserved",
    "e820 high": r"BIOS-e820: \[mem 0x0000000000100000-0x000000001fffffff\] usable",
    "MP table": r"MPTABLE: OEM ID: VVMM",
}

p = subprocess.Popen([h.VVMM, "run", "--kernel", vmlinux, "--mem", "512M", "--cpus", "2",
                      "--cmdline", "earlyprintk=serial,ttyS0,115200 vvmm-smoke"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
os.set_blocking(p.stdout.fileno(), False)
out = b""
start = time.monotonic()
missing = dict(wanted)
while missing and time.monotonic() - start < 240 and p.poll() is None:
    time.sleep(0.2)
    chunk = p.stdout.read()
    if chunk:
        out += chunk
        text = out.decode(errors="replace")
        missing = {k: v for k, v in wanted.items() if not re.search(v, text)}
elapsed = time.monotonic() - start
p.send_signal(signal.SIGTERM)
try:
    p.wait(10)
except subprocess.TimeoutExpired:
    p.kill()
text = out.decode(errors="replace")
h.check(not missing, "after %.0fs Linux had not printed: %s\n--- console ---\n%s\n--- stderr ---\n%s"
        % (elapsed, ", ".join(missing), text[-3000:], p.stderr.read().decode(errors="replace")))
h.check(p.returncode == 128 + signal.SIGTERM, "SIGTERM should end vvmm with 143, got %s" % p.returncode)
print("ok: Linux printed banner, command line, e820 and MP table in %.1fs" % elapsed)
