"""The serial console on a terminal: typed input reaches the guest through a
pty, the terminal is in raw mode while the guest runs and restored after, a
guest reboot exits 0, Ctrl-A x quits, and a guest crash (triple fault) exits
non-zero with one line naming the exit, the vCPU and rip."""
import os
import pty
import re
import select
import subprocess
import termios
import time

import harness as h

h.require_kvm()


class Console:
    def __init__(self, cmdline):
        self.master, slave = pty.openpty()
        self.saved = termios.tcgetattr(slave)
        self.slave = slave
        self.proc = subprocess.Popen([h.VVMM, "run", "--kernel", h.TESTGUEST, "--mem", "128M", "--cmdline", cmdline],
                                     stdin=slave, stdout=slave, stderr=subprocess.PIPE, text=True)
        self.out = ""

    def expect(self, pattern, timeout=30):
        deadline = time.monotonic() + h.t(timeout)
        while time.monotonic() < deadline:
            m = re.search(pattern, self.out)
            if m:
                return m
            r, _, _ = select.select([self.master], [], [], 0.2)
            if r:
                try:
                    self.out += os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    break
        h.fail("timed out waiting for %r; console so far:\n%s" % (pattern, self.out[-3000:]))

    def type(self, text):
        for ch in text.encode():
            os.write(self.master, bytes([ch]))
            time.sleep(0.01)

    def finish(self, timeout=30):
        try:
            status = self.proc.wait(h.t(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            h.fail("vvmm did not exit; console:\n" + self.out[-3000:])
        err = self.proc.stderr.read()
        restored = termios.tcgetattr(self.slave) == self.saved
        os.close(self.master)
        os.close(self.slave)
        return status, err, restored


# Typed input reaches the guest; 'reboot' exits 0; the terminal comes back cooked.
c = Console("test=shell")
c.expect(r"tg: shell")
lflag = termios.tcgetattr(c.slave)[3]
h.check(not (lflag & termios.ICANON) and not (lflag & termios.ECHO), "terminal is not in raw mode while the guest runs")
c.type("hello vvmm\r")
c.expect(r"tg: echo hello vvmm")
c.type("reboot\r")
status, err, restored = c.finish()
h.check(status == 0, "reboot: status %s, stderr %r" % (status, err))
h.check(restored, "terminal settings were not restored after exit")
print("ok: input reaches the guest, reboot exits 0, terminal restored")

# The escape sequence quits.
c = Console("test=shell")
c.expect(r"tg: shell")
c.type("\x01x")
status, err, restored = c.finish()
h.check(status == 0, "Ctrl-A x: status %s, stderr %r" % (status, err))
h.check(restored, "terminal not restored after Ctrl-A x")
print("ok: Ctrl-A x quits")

# A signal stops the VM with 128+signal and still restores the terminal.
c = Console("test=shell")
c.expect(r"tg: shell")
c.proc.send_signal(__import__("signal").SIGTERM)
status, err, restored = c.finish()
h.check(status == 128 + 15, "SIGTERM: status %s, stderr %r" % (status, err))
h.check(restored, "terminal not restored after SIGTERM")
print("ok: SIGTERM exits 143 with the terminal restored")

# A guest crash is not a clean exit.
c = Console("test=shell")
c.expect(r"tg: shell")
c.type("panic\r")
c.expect(r"tg: panic")
status, err, restored = c.finish()
h.check(status not in (0, None), "a triple fault exited with status %s" % status)
lines = [l for l in err.strip().split("\n") if l.strip()]
h.check(len(lines) == 1 and re.match(r"vvmm: error: vCPU \d+: triple fault \(KVM_EXIT_SHUTDOWN\) at rip=0x[0-9a-f]+\r?$", lines[0]),
        "expected one line naming the exit, vCPU and rip, got %r" % err)
h.check(restored, "terminal not restored after a guest crash")
print("ok: guest crash ->", lines[0].strip())
