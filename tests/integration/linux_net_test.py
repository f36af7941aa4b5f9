"""Debian's kernel with vvmm's virtio-net: two Linux guests on the peer mesh
ping each other and move 64 MiB over TCP. Needs hardware virtualization
(VT-x/AMD-V); on a PVM host a full Linux boot takes hours. In the test host VM
two Linux guests at once run with shadow paging (harness.require_hardware_virtualization)."""
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile

import harness as h

h.require_hardware_virtualization(several_guests=True)

kernel = os.path.join(h.GUEST_DIR, "vmlinuz")
initrd = os.path.join(h.GUEST_DIR, "initramfs.cpio.gz")
h.check(os.path.exists(kernel) and os.path.exists(initrd), "run guest-images/linux/build.sh first")
tmp = tempfile.mkdtemp(prefix="vvmm-linux-net-")


def linux(cmdline_run, extra, ip=None):
    cmd = [h.VVMM, "run", "--kernel", kernel, "--initrd", initrd, "--mem", "1G", "--cpus", "2"] + extra
    cmd += ["--cmdline", ('ip=%s ' % ip if ip else "") + 'vvmm.run="%s"' % cmdline_run]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace")


# Two Linux guests: ping, then 64 MiB over TCP.
ports = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    ports.append(s.getsockname()[1])
    s.close()
net = ["peer,id=la,listen=127.0.0.1:%d,peers=127.0.0.1:%d,mac=52:54:00:00:30:01" % (ports[0], ports[1]),
       "peer,id=lb,listen=127.0.0.1:%d,peers=127.0.0.1:%d,mac=52:54:00:00:30:02" % (ports[1], ports[0])]
server = linux("nc -l -p 5000 > /tmp/got; wc -c < /tmp/got; md5sum /tmp/got", ["--net", net[0]], ip="10.9.0.1/24")
# The server may boot later than the client (seconds later under emulation):
# wait until it answers, then 3 pings must all come back.
client = linux("for i in $(seq 120); do ping -c 1 -W 1 10.9.0.1 >/dev/null && break; done; "
               "ping -c 3 10.9.0.1 && dd if=/dev/zero bs=1M count=64 2>/dev/null | nc -w 5 10.9.0.1 5000",
               ["--net", net[1]], ip="10.9.0.2/24")
cout, cerr = client.communicate(timeout=h.t(600))
sout, serr = server.communicate(timeout=h.t(600))
h.check(client.returncode == 0 and " 0% packet loss" in cout, "ping failed:\n%s\n%s" % (cout[-3000:], cerr[-1000:]))
zeros_md5 = hashlib.md5(bytes(64 << 20)).hexdigest()
h.check(str(64 << 20) in sout and zeros_md5 in sout, "64 MiB did not arrive intact:\n%s\n%s" % (sout[-3000:], serr[-1000:]))
print("ok: two Linux guests pinged and moved 64 MiB over TCP")
shutil.rmtree(tmp)
