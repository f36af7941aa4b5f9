"""Bad input gets one clear error line on stderr and a non-zero exit, and no VM."""
import os
import shutil
import tempfile

import harness as h

tmp = tempfile.mkdtemp(prefix="vvmm-errors-")


def expect_error(args, needle):
    r = h.run_vvmm(args, timeout=30)
    lines = [l for l in r.stderr.split("\n") if l.strip()]
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
expect_error(["frobnicate"], "frobnicate")

shutil.rmtree(tmp)
