"""Bad input gets one clear error line on stderr and a non-zero exit, and no VM."""
import json
import os
import shutil
import tempfile

import harness as h

tmp = tempfile.mkdtemp(prefix="vvmm-errors-")


def expect_error(args, needle):
    r = h.run_vvmm(args, timeout=30)
    # (--trust-unsigned adds a warning that a seal was not checked)
    trusting = "--trust-unsigned" in args
    lines = [l for l in r.stderr.split("\n") if l.strip() and not (trusting and l.startswith("vvmm: warning:"))]
    h.check(r.status not in (0, None), "%s: exit status %s" % (args, r.status))
    h.check(len(lines) == 1, "%s: expected exactly one stderr line, got:\n%s" % (args, r.stderr))
    h.check(lines[0].startswith("vvmm: error: "), "%s: line does not start with 'vvmm: error:': %r" % (args, lines[0]))
    h.check(needle in lines[0], "%s: %r does not mention %r" % (args, lines[0], needle))
    h.check(r.stdout == "", "%s: unexpected stdout %r" % (args, r.stdout))
    print("ok:", lines[0])


def write(name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


kernel = ["run", "--kernel", h.TESTGUEST]
expect_error(["run", "--kernel", os.path.join(tmp, "nope")], "No such file")
expect_error(["run", "--kernel", write("random.bin", os.urandom(8192))], "not a bzImage or ELF kernel")
expect_error(["run", "--kernel", write("empty.bin", b"")], "is empty")
expect_error(["run", "--kernel", tmp], "not a regular file")

# The test guest with its boot protocol version patched down to 2.05.
with open(h.TESTGUEST, "rb") as f:
    image = bytearray(f.read())
image[0x206:0x208] = (0x0205).to_bytes(2, "little")
expect_error(["run", "--kernel", write("old.bzImage", bytes(image))], "boot protocol 2.5 is too old")

expect_error(kernel + ["--initrd", os.path.join(tmp, "missing.img")], "initrd")
expect_error(kernel + ["--mem", "32M", "--initrd", write("big.img", bytes(40 << 20))], "does not fit")
os.unlink(os.path.join(tmp, "big.img"))
expect_error(kernel + ["--mem", "1M"], "--mem")
expect_error(kernel + ["--mem", "lots"], "--mem")
expect_error(kernel + ["--mem", "900G"], "cannot allocate")
expect_error(kernel + ["--cpus", "0"], "--cpus 0 is out of range")
expect_error(kernel + ["--cpus", "33"], "--cpus 33 is out of range")
expect_error(kernel + ["--console", "serial"], "--console")
expect_error(["run"], "--kernel")
expect_error(["run", "--kernel", h.TESTGUEST, "--bogus"], "bogus")
expect_error(["plan", "--mtbf", "3", "--epoch-cost", "5m"], "--mtbf: '3' has no unit")
expect_error(["plan", "--mtbf", "3h", "--epoch-cost", "-5m"], "--epoch-cost: '-5m' is out of range")
expect_error(["frobnicate"], "frobnicate")

# Cluster input: the config and the secret must be small regular files
# (a directory, a FIFO or /dev/zero must not hang, crash or eat memory).
secret = write("k.key", os.urandom(32))
os.chmod(secret, 0o600)
cluster = """[cluster]\nname = "t"\nsecret_file = "%s"\ncheckpoint_dir = "ck"\n
[[node]]\nname = "n0"\naddress = "127.0.0.1"\n
[[vm]]\nname = "vm0"\nnode = "n0"\nport = 17100\nkernel = "%s"\n"""
good = write("c.toml", (cluster % (secret, h.TESTGUEST)).encode())
fifo = os.path.join(tmp, "fifo")
os.mkfifo(fifo)
expect_error(["list", "--cluster", tmp], "cluster config %s is not a regular file" % tmp)
expect_error(["list", "--cluster", fifo], "is not a regular file")
expect_error(["list", "--cluster", "/dev/zero"], "is not a regular file")
expect_error(["list", "--cluster", write("z.toml", (cluster % ("/dev/zero", h.TESTGUEST)).encode())],
             "cluster secret /dev/zero is not a regular file")
expect_error(["restore", "--cluster", good, "--epoch", "-1"], "--epoch")
expect_error(["restore", "--cluster", good, "--epoch", "0"], "--epoch")
expect_error(["restore", "--cluster", good, "--epoch", "99999999999999999999"], "--epoch")
expect_error(["restore", "--cluster", good], "no committed epoch")
expect_error(["run", "--cluster", good, "--cpus", "2"], "--cpus does not apply")
expect_error(["run", "--cluster", good, "--huge-pages"], "--huge-pages does not apply")
expect_error(["restore", "--cluster", good, "--console", "stdio"], "--console does not apply")
# A committed epoch whose VM checkpoint is missing, or is another one: refused
# before any VMM starts (the others would wait for that VM for ever).
os.makedirs(os.path.join(tmp, "ck", "epochs"))
epoch = {"format": "vvmm-cluster-epoch", "format_version": 1, "cluster": "t", "epoch": 1, "mode": "cow",
         "incremental": False, "created": "2026-12-02T09:00:00Z", "epoch_ms": 10.0,
         "vms": [{"name": "vm0", "node": "n0", "id": "000001", "manifest_xxh3": "0123456789abcdef", "bytes": 1,
                  "pause_ms": 1.0, "total_ms": 2.0, "incremental": False}]}
with open(os.path.join(tmp, "ck", "epochs", "000001.json"), "w") as f:
    json.dump(epoch, f)
# Written by hand, so not sealed with the cluster's key: refused as such, and
# past that (--trust-unsigned) still checked against the VMs' checkpoints.
expect_error(["restore", "--cluster", good], "000001.json is not sealed (no MAC)")
expect_error(["restore", "--cluster", good, "--trust-unsigned"],
             "vm0's checkpoint %s/ck/vm0/000001 cannot be used" % tmp)
os.makedirs(os.path.join(tmp, "ck", "vm0", "000001"))
with open(os.path.join(tmp, "ck", "vm0", "000001", "manifest.json"), "w") as f:
    f.write("{}")
expect_error(["restore", "--cluster", good, "--trust-unsigned"], "is not the one the epoch recorded")
expect_error(["restore", "--cluster", good, "--epoch", "2"], "epoch 2 was not committed")

# A VMM that accepts but never answers holds a controller only for the
# handshake's few seconds, then the next VMM is tried.
import socket
import time
sink = socket.socket()
sink.bind(("127.0.0.1", 0))
sink.listen(4)
closed = socket.socket()
closed.bind(("127.0.0.1", 0))
closed_port = closed.getsockname()[1]
closed.close()
two = (cluster % (secret, h.TESTGUEST)).replace("port = 17100", "port = %d" % sink.getsockname()[1])
two += '[[vm]]\nname = "vm1"\nnode = "n0"\nport = %d\nkernel = "%s"\n' % (closed_port, h.TESTGUEST)
t0 = time.monotonic()
expect_error(["checkpoint", "--all", "--cluster", write("two.toml", two.encode()), "--timeout", "60"],
             "no VMM of cluster 't' answered: timed out in the TLS handshake with vm0")
h.check(time.monotonic() - t0 < 15, "a silent VMM held the controller for %.1f s" % (time.monotonic() - t0))
sink.close()
expect_error(["checkpoint", "--all", "--cluster", good, "--timeout", "3601"], "--timeout: 1..3600 seconds")

shutil.rmtree(tmp)
