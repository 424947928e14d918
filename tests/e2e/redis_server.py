"""A real redis-server (Debian's package) for the e2e tests, on a free 127.0.0.1 port.

    srv = RedisServer(workdir).start()   # redis-server --port P --save '' --appendonly no
    srv.command("GET", "k")              # a tiny synchronous RESP client (for checks)
    srv.kill()                           # SIGKILL by PID (an outage); srv.start() again on the
                                         # same port (the restart); srv.stop() at teardown
    silent = SilentServer()              # accepts TCP connections, reads, never answers

Nothing is persisted (no RDB, no AOF): a restarted server starts empty, as after a crash
without persistence. Every wait is bounded.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import List, Optional

from harness import end_process, free_port, port_open, wait_for_port, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def available() -> bool:
    return Path(REDIS_SERVER).exists()


class RedisServer:
    def __init__(self, workdir: Path, port: Optional[int] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.workdir / f"redis-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        assert self.proc is None, "already running"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
             "--protected-mode", "yes"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.workdir))
        log.close()
        try:
            wait_for_port("127.0.0.1", self.port, timeout, self.proc)
        except RuntimeError as e:  # it exited
            raise RuntimeError(f"redis-server: {e}: {self.log_path.read_text(errors='replace')[-2000:]}") from e

        def ready():
            try:
                return self.command("PING") == "PONG"
            except OSError:
                return False
        wait_until(ready, timeout, what=f"redis-server on port {self.port} to answer PING")
        return self

    def _end(self, sig: int, timeout: float) -> None:
        if self.proc is not None:
            end_process(self.proc, sig, timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL by PID: the connections drop at once, nothing is saved."""
        self._end(signal.SIGKILL, 5)
        wait_until(lambda: not port_open("127.0.0.1", self.port), 5, what="redis port to close")

    def stop(self) -> None:
        self._end(signal.SIGTERM, 5)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- a minimal synchronous client, for the tests' own checks
    def command(self, *args, timeout: float = 2.0):
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(encode(args))
            return read_reply(s.makefile("rb"))


def encode(args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def read_reply(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("connection closed")
    t, body = line[:1], line[1:-2]
    if t == b"+":
        return body.decode()
    if t == b"-":
        return RedisError(body.decode())
    if t == b":":
        return int(body)
    if t == b"$":
        n = int(body)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if t == b"*":
        n = int(body)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    raise OSError(f"bad reply {line!r}")


class RedisError(str):
    pass


class SilentServer:
    """Listens on a free 127.0.0.1 port, accepts every connection, reads and discards what it
    gets, never writes: a Redis that hangs."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.received = 0
        self._conns: List[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self):
        import selectors
        sel = selectors.DefaultSelector()
        self.sock.setblocking(False)
        sel.register(self.sock, selectors.EVENT_READ)
        while not self._stop:
            for key, _ in sel.select(0.05):
                if key.fileobj is self.sock:
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self.accepted += 1
                    self._conns.append(c)
                    sel.register(c, selectors.EVENT_READ)
                else:
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
                    else:
                        self.received += len(data)
        sel.close()

    def close(self):
        self._stop = True
        self._thread.join(2)
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()

