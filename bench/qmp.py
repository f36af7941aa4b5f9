"""bench/qmp: a minimal synchronous QMP client (QEMU Machine Protocol over a
unix socket) for the benchmarks; no dependency beyond the standard library."""
import json
import socket
import time


class QMPError(Exception):
    """A command's {"error": {...}} reply; str() is QEMU's description."""

    def __init__(self, cmd, error):
        super().__init__("%s: %s" % (cmd, error.get("desc", error)))
        self.error = error


class QMP:
    def __init__(self, path, timeout=30.0):
        """Connects (retrying until QEMU has created the socket), reads the
        greeting and leaves capabilities negotiation mode."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.events = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise RuntimeError("not a QMP greeting: %r" % greeting)
        self.execute("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP connection closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def execute(self, cmd, **arguments):
        """Runs one command and returns its "return" value; events that
        arrive meanwhile are kept in self.events."""
        msg = {"execute": cmd}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise QMPError(cmd, reply["error"])
            elif "return" in reply:
                return reply["return"]

    def close(self):
        self.sock.close()
