"""Debian's kernel with vvmm's virtio-blk: it mounts an ext4 disk the host made,
reads the file the host put there, and writes one the host then finds in the
image file. One vCPU: the disk is the point, and SMP boots are linux_boot's.
Needs hardware virtualization (VT-x/AMD-V) or the test host VM; on
a PVM host a full Linux boot takes hours."""
import os
import shutil
import subprocess
import tempfile

import harness as h

h.require_hardware_virtualization()

kernel = os.path.join(h.GUEST_DIR, "vmlinuz")
initrd = os.path.join(h.GUEST_DIR, "initramfs.cpio.gz")
h.check(os.path.exists(kernel) and os.path.exists(initrd), "run guest-images/linux/build.sh first")
tmp = tempfile.mkdtemp(prefix="vvmm-linux-disk-")


def linux(cmdline_run, extra):
    cmd = [h.VVMM, "run", "--kernel", kernel, "--initrd", initrd, "--mem", "1G", "--cpus", "1"] + extra
    cmd += ["--cmdline", 'vvmm.run="%s"' % cmdline_run]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace")


# ext4: mount, read a file the host put there, write one the host reads back.
root = os.path.join(tmp, "root")
os.makedirs(root)
with open(os.path.join(root, "hello.txt"), "w") as f:
    f.write("hello from the host\n")
image = os.path.join(tmp, "disk.ext4")
subprocess.run(["mkfs.ext4", "-q", "-F", "-d", root, image, "64M"], check=True)
p = linux("mount -t ext4 /dev/vda /mnt && cat /mnt/hello.txt && echo written-by-linux > /mnt/new.txt && umount /mnt",
          ["--disk", "path=" + image])
out, err = p.communicate(timeout=h.t(300))
h.check(p.returncode == 0 and "hello from the host" in out and "command exited with status 0" in out,
        "ext4 mount failed:\n%s\n%s" % (out[-3000:], err[-1000:]))
back = subprocess.run(["debugfs", "-R", "cat /new.txt", image], capture_output=True, text=True).stdout
h.check("written-by-linux" in back, "the file Linux wrote is not in the image: %r" % back)
print("ok: Linux mounted the ext4 disk, read and wrote it")

shutil.rmtree(tmp)
