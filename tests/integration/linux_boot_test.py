"""Debian's kernel and the busybox initramfs boot to a shell that runs a
command and reboots (vvmm exits 0). Needs hardware virtualization (VT-x or
AMD-V): on a PVM host guest kernel code is emulated and this would take hours."""
import os

import harness as h

h.require_hardware_virtualization()

kernel = os.path.join(h.GUEST_DIR, "vmlinuz")
initrd = os.path.join(h.GUEST_DIR, "initramfs.cpio.gz")
h.check(os.path.exists(kernel) and os.path.exists(initrd), "run guest-images/linux/build.sh first")
for cpus in (1, 2):
    r = h.run_vvmm(["run", "--kernel", kernel, "--initrd", initrd, "--cpus", str(cpus), "--mem", "1G",
                    "--cmdline", 'vvmm.run="echo hello-from-linux; grep -c ^processor /proc/cpuinfo"'], timeout=180)
    h.check(r.status == 0, "Linux boot failed:\n" + r.describe())
    h.check("vvmm-linux: modules loaded" in r.stdout, "modules did not load:\n" + r.describe())
    h.check("hello-from-linux" in r.stdout, "command did not run:\n" + r.describe())
    h.check("vvmm-linux: command exited with status 0" in r.stdout, r.describe())
    print("ok: Linux with %d vCPU(s) booted to busybox and rebooted in %.1fs" % (cpus, r.seconds))
