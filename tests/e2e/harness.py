"""estuary end-to-end test harness (used by conftest.py and the test modules).

Pieces, all in-process except estuary itself:
  - free_port / wait_for_port: TCP ports on 127.0.0.1, bounded waits;
  - DNSTestServer: a dnslib UDP server on 127.0.0.1 whose records the test changes at run
    time, with per-name query counters and an "outage" switch;
  - AsyncLoop + Backend: aiohttp HTTP servers on one background event loop, with per-route
    handlers (JSON, delays, statuses, resets, chunked and close-delimited bodies, raw bytes),
    recording every request and counting connections;
  - Estuary: the gateway process (config file in a temp dir, stderr captured, SIGTERM on
    stop, exit status and sanitizer reports checked);
  - clients: http_request (aiohttp), raw_http (exact HTTP/1.1 bytes over a socket), curl;
  - make_tls_material: a CA, a server cert for localhost/127.0.0.1 signed by it, and a
    self-signed cert, made with the openssl CLI.

Every wait is bounded. Nothing here sleeps to paper over a race: waits poll a condition
until a deadline.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Union

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from multidict import CIMultiDict, CIMultiDictProxy

from dnslib import AAAA, A, QTYPE, RCODE, RR, DNSRecord
from dnslib.server import DNSLogger, DNSServer

REPO_ROOT = Path(__file__).resolve().parents[2]
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def estuary_bin() -> Path:
    """The binary under test: $ESTUARY_BIN (relative to the cwd) or build/estuary."""
    env = os.environ.get("ESTUARY_BIN")
    return Path(env).resolve() if env else REPO_ROOT / "build" / "estuary"


def sanitizer_report(text: str) -> Optional[str]:
    """The first sanitizer marker found in `text` (with some context), or None."""
    for marker in SANITIZER_MARKERS:
        i = text.find(marker)
        if i >= 0:
            return text[max(0, i - 200): i + 3000]
    return None


# --------------------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(cond: Callable[[], Any], timeout: float, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Polls cond() until it returns something truthy; raises TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_port(host: str, port: int, timeout: float = 10.0,
                  proc: Optional[subprocess.Popen] = None) -> None:
    """Waits until host:port accepts TCP connections; fails early if `proc` exits."""
    def ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before "
                               f"listening on {host}:{port}")
        return port_open(host, port)
    wait_until(ready, timeout, what=f"{host}:{port} to accept connections")


def end_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> bool:
    """Sends `sig` to `proc` unless it has already exited and waits up to `timeout` s for it,
    then SIGKILLs it (waiting at most 5 s more). False when it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return False
    return True


# --------------------------------------------------------------------------- DNS


class _QuietLogger(DNSLogger):
    def __init__(self):
        super().__init__(log="-request,-reply,-truncated,-error,-recv,-send,-data")


class _SilentDrop(Exception):
    """Raised by the resolver to send no answer at all (outage)."""


class DNSTestServer:
    """A UDP DNS server on 127.0.0.1 for the tests, answering from records set at run time.

    - set_a(name, ips, ttl) / set_aaaa(name, ips, ttl): replace the A / AAAA records of name;
    - remove(name): forget a name (it then gets NXDOMAIN);
    - names not known get NXDOMAIN (any zone, so nothing leaks to a real resolver); a known
      name asked for a type it lacks gets NOERROR with no answer (NODATA);
    - set_rcode(name, rcode): answer name with a fixed rcode (e.g. "SERVFAIL");
    - set_delay(name, seconds): answer name late (the server is single-threaded);
    - answering = False: the server stays bound but sends nothing (an outage: clients time out);
    - queries(name, qtype=None): how many queries for name (of that type, "A"/"AAAA") arrived,
      counted even while not answering; query_log: [(name, qtype, monotonic time)];
    - reset(): clear records, counters, rcodes, and answer again.
    Names are case-insensitive and given without the trailing dot.
    """

    def __init__(self, host: str = "127.0.0.1"):
        self.lock = threading.Lock()
        self.records: Dict[str, Dict[str, List[tuple]]] = {}
        self.rcodes: Dict[str, str] = {}
        self.delays: Dict[str, float] = {}
        self.query_log: List[tuple] = []
        self.answering = True
        outer = self

        class Resolver:
            def resolve(self, request, handler):
                return outer._resolve(request)

        from dnslib.server import DNSHandler

        class Handler(DNSHandler):
            def get_reply(self, data):
                reply = super().get_reply(data)
                if reply is None:
                    raise _SilentDrop()
                return reply

            def handle(self):
                try:
                    super().handle()
                except _SilentDrop:
                    pass

        self._server = DNSServer(Resolver(), address=host, port=0, tcp=False,
                                 logger=_QuietLogger(), handler=Handler)
        self.host = host
        self.port = self._server.server.server_address[1]
        self._server.start_thread()

    # The DNSHandler calls reply.pack(); returning None from resolve() makes get_reply fail
    # with AttributeError, so the override above turns None into a silent drop.
    def _resolve(self, request: DNSRecord):
        q = request.q
        name = str(q.qname).rstrip(".").lower()
        qtype = QTYPE[q.qtype]
        with self.lock:
            self.query_log.append((name, qtype, time.monotonic()))
            delay = self.delays.get(name, 0.0)
        if delay:
            time.sleep(delay)  # the server is single-threaded: this delays every answer queued behind
        with self.lock:
            if not self.answering:
                return None
            reply = request.reply()
            rcode = self.rcodes.get(name)
            if rcode is not None:
                reply.header.rcode = getattr(RCODE, rcode)
                return reply
            recs = self.records.get(name)
            if recs is None:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for ip, ttl in recs.get(qtype, []):
                rdata = A(ip) if qtype == "A" else AAAA(ip)
                reply.add_answer(RR(q.qname, q.qtype, rdata=rdata, ttl=ttl))
            return reply

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def set_a(self, name: str, ips: Union[str, List[str]], ttl: int = 60) -> None:
        self._set(name, "A", ips, ttl)

    def set_aaaa(self, name: str, ips: Union[str, List[str]], ttl: int = 60) -> None:
        self._set(name, "AAAA", ips, ttl)

    def _set(self, name, qtype, ips, ttl):
        ips = [ips] if isinstance(ips, str) else list(ips)
        with self.lock:
            recs = self.records.setdefault(name.lower().rstrip("."), {})
            recs[qtype] = [(ip, ttl) for ip in ips]

    def remove(self, name: str) -> None:
        with self.lock:
            self.records.pop(name.lower().rstrip("."), None)

    def set_rcode(self, name: str, rcode: Optional[str]) -> None:
        with self.lock:
            if rcode is None:
                self.rcodes.pop(name.lower(), None)
            else:
                self.rcodes[name.lower()] = rcode

    def set_delay(self, name: str, seconds: float) -> None:
        """Answer queries for `name` only after `seconds` (blocks the server meanwhile)."""
        with self.lock:
            self.delays[name.lower()] = seconds

    def set_answering(self, on: bool) -> None:
        with self.lock:
            self.answering = on

    def queries(self, name: str, qtype: Optional[str] = None) -> int:
        name = name.lower().rstrip(".")
        with self.lock:
            return sum(1 for n, t, _ in self.query_log if n == name and (qtype is None or t == qtype))

    def reset(self) -> None:
        with self.lock:
            self.records.clear()
            self.rcodes.clear()
            self.delays.clear()
            self.query_log.clear()
            self.answering = True

    def close(self) -> None:
        self._server.stop()
        self._server.server.server_close()


def dns_query(server: DNSTestServer, name: str, qtype: str = "A", timeout: float = 2.0) -> DNSRecord:
    """Asks the test server directly (for tests of the harness itself)."""
    q = DNSRecord.question(name, qtype)
    data = q.send(server.host, server.port, timeout=timeout)
    return DNSRecord.parse(data)


# --------------------------------------------------------------------------- event loop


class AsyncLoop:
    """One asyncio event loop in a daemon thread; run(coro) from test code (blocking)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="e2e-aio", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable, timeout: float = 30.0):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def close(self) -> None:
        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self.run(cancel_all(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


# --------------------------------------------------------------------------- backends

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass
class RecordedRequest:
    method: str
    path: str           # decoded path
    raw_path: str       # as sent, with the query string
    query_string: str
    headers: CIMultiDictProxy
    body: bytes
    version: str
    peer: Any
    params: Dict[str, str]


def _template_regex(template: str) -> re.Pattern:
    """'/users/{id}' -> regex with named groups; '{rest...}' matches the rest (maybe empty)."""
    out, pos = "", 0
    for m in re.finditer(r"\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}", template):
        out += re.escape(template[pos:m.start()])
        out += f"(?P<{m.group(1)}>.*)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)"
        pos = m.end()
    out += re.escape(template[pos:])
    return re.compile("^" + out + "$")


class Backend:
    """An aiohttp HTTP/1.1 server on the shared background loop.

    route(method, template, reply): `reply` is an async handler `(request) -> response`
    (see the helpers below) or any JSON value (sent as 200 application/json). Path params of
    the template are in request["params"]. method "*" matches any method. Unmatched -> 404.
    Later routes with the same method+template replace earlier ones.
    Records every request (self.requests, RecordedRequest) and counts accepted TCP
    connections (self.connections). With ssl_ctx it serves HTTPS (url says https://).
    """

    def __init__(self, aio: AsyncLoop, name: str = "backend", host: str = "127.0.0.1",
                 port: Optional[int] = None, ssl_ctx: Optional[ssl.SSLContext] = None):
        self.aio, self.name, self.host = aio, name, host
        self.ssl_ctx = ssl_ctx
        self.port = port or 0
        self.routes: List[tuple] = []
        self.requests: List[RecordedRequest] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._srv = None
        self._web_server = None

    # ---- lifecycle
    def start(self) -> "Backend":
        self.aio.run(self._start())
        return self

    async def _start(self):
        self._web_server = web.Server(self._dispatch, access_log=None)

        def factory():
            with self._lock:
                self.connections += 1
            return self._web_server()

        self._srv = await asyncio.get_running_loop().create_server(
            factory, self.host, self.port, reuse_address=True, ssl=self.ssl_ctx)
        self.port = self._srv.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._srv is not None:
            self.aio.run(self._stop(), timeout=10)
            self._srv = None

    async def _stop(self):
        self._srv.close()
        await self._web_server.shutdown(0.2)
        await self._srv.wait_closed()

    # ---- configuration
    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_ctx else 'http'}://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def route(self, method: str, template: str, reply: Any) -> "Backend":
        handler = reply if callable(reply) else json_reply(reply)
        with self._lock:
            self.routes = [r for r in self.routes if not (r[0] == method.upper() and r[1] == template)]
            self.routes.append((method.upper(), template, _template_regex(template), handler))
        return self

    def get(self, template: str, reply: Any) -> "Backend":
        return self.route("GET", template, reply)

    # ---- inspection
    def requests_to(self, path: str) -> List[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @property
    def last(self) -> RecordedRequest:
        with self._lock:
            assert self.requests, f"backend {self.name} got no request"
            return self.requests[-1]

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.connections = 0

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            routes = list(self.routes)
        handler, params = None, {}
        for method, _tpl, rx, h in routes:
            if method not in ("*", request.method):
                continue
            m = rx.match(request.path)
            if m:
                handler, params = h, m.groupdict()
                break
        rec = RecordedRequest(request.method, request.path, request.raw_path, request.rel_url.raw_query_string,
                              CIMultiDictProxy(CIMultiDict(request.headers)), body,
                              f"{request.version.major}.{request.version.minor}",
                              request.transport.get_extra_info("peername") if request.transport else None,
                              params)
        with self._lock:
            self.requests.append(rec)
        request["params"] = params
        request["recorded"] = rec
        if handler is None:
            return web.json_response({"error": "no such route on test backend"}, status=404)
        return await handler(request)


# ---- reply helpers: each returns an async handler for Backend.route()

def json_reply(obj: Any = None, status: int = 200, headers: Optional[dict] = None,
               content_type: str = "application/json") -> Handler:
    """JSON body; `obj` may be a callable(params) -> value, evaluated per request."""
    async def h(request):
        value = obj(request["params"]) if callable(obj) else obj
        return web.Response(status=status, body=json.dumps(value).encode(), headers=headers,
                            content_type=None if content_type is None else content_type)
    return h


def body_reply(body: Union[bytes, str] = b"", status: int = 200, headers: Optional[dict] = None,
               content_type: Optional[str] = "text/plain") -> Handler:
    """A fixed body and status (e.g. status_reply(503) style errors, non-JSON bodies, 204)."""
    data = body.encode() if isinstance(body, str) else body

    async def h(request):
        hdrs = CIMultiDict(headers or {})
        if content_type and status != 204:
            hdrs.setdefault("Content-Type", content_type)
        return web.Response(status=status, body=data if status != 204 else None, headers=hdrs)
    return h


def status_reply(status: int, body: Any = None) -> Handler:
    """A status with a JSON body (default {"status": N})."""
    return json_reply({"status": status} if body is None else body, status=status)


def delayed(seconds: float, then: Any) -> Handler:
    """Waits `seconds` (cancelled when the client goes away or the backend stops), then replies."""
    inner = then if callable(then) else json_reply(then)

    async def h(request):
        await asyncio.sleep(seconds)
        return await inner(request)
    return h


def _abort_with_rst(request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


def reset_reply(after_bytes: bytes = b"") -> Handler:
    """Optionally writes `after_bytes` (e.g. a partial head), then resets the connection (RST)."""
    async def h(request):
        if after_bytes and request.transport:
            request.transport.write(after_bytes)
            await asyncio.sleep(0.05)
        _abort_with_rst(request)
        raise asyncio.CancelledError()
    return h


def raw_reply(data: bytes, close: bool = True) -> Handler:
    """Writes exactly `data` on the socket (a hand-made HTTP response), then closes it (FIN).
    A close-delimited body is raw_reply(b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\n\\r\\n{...}")."""
    async def h(request):
        t = request.transport
        t.write(data)
        if close:
            t.close()
        raise asyncio.CancelledError()
    return h


def close_delimited_reply(body: bytes, status: int = 200, content_type: str = "application/json") -> Handler:
    """HTTP/1.1 response without Content-Length or chunking; the body ends when the connection closes."""
    head = (f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n").encode()
    return raw_reply(head + body)


def chunked_reply(parts: List[bytes], status: int = 200, content_type: str = "application/json",
                  pause: float = 0.0, headers: Optional[dict] = None) -> Handler:
    """Transfer-Encoding: chunked, one chunk per part, with `pause` seconds between chunks."""
    async def h(request):
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_type = content_type
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i, p in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            await resp.write(p)
        await resp.write_eof()
        return resp
    return h


def echo_reply(status: int = 200) -> Handler:
    """JSON describing the request as the backend saw it (method, path, query, headers, body)."""
    async def h(request):
        rec = request["recorded"]
        return web.json_response({
            "method": rec.method, "path": rec.path, "raw_path": rec.raw_path,
            "query": rec.query_string, "body": rec.body.decode("latin-1"),
            "headers": {k: v for k, v in rec.headers.items()},
        }, status=status)
    return h


def demo_users(params) -> dict:
    return {"id": params["id"], "name": f"user{params['id']}"}


def demo_orders(params) -> dict:
    return {"id": params["id"], "product": f"item{params['id']}"}


DEMO_BODY = {"user": {"id": "123", "name": "user123"}, "order": {"id": "456", "product": "item456"}}


# --------------------------------------------------------------------------- estuary process


class Estuary:
    """The gateway process. The config dict is written to <workdir>/estuary.json.

    start() waits (bounded) until every configured listener accepts TCP connections.
    stop() sends SIGTERM, waits (bounded, then SIGKILL), returns the exit status.
    check() raises AssertionError when the exit status is not `expect_rc` or stderr holds a
    sanitizer report.
    """

    def __init__(self, config: dict, workdir: Path, binary: Optional[Path] = None,
                 env: Optional[dict] = None, hosts: Optional[Dict[str, str]] = None):
        self.config = config
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = Path(binary or estuary_bin())
        self.config_path = self.workdir / "estuary.json"
        self.stderr_path = self.workdir / "stderr.log"
        self.stdout_path = self.workdir / "stdout.log"
        self.env = dict(os.environ)
        if hosts is not None:
            hosts_path = self.workdir / "hosts"
            hosts_path.write_text("".join(f"{ip} {name}\n" for name, ip in hosts.items()))
            self.env["ESTUARY_HOSTS_FILE"] = str(hosts_path)
        self.env.update(env or {})
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self.prefix: List[str] = []  # a command the binary runs under (e.g. ["prlimit", "--nofile=64:64"])

    # ---- addresses
    def _listener(self, tls: bool) -> dict:
        for ln in self.config.get("listen", []):
            if bool(ln.get("tls")) == tls:
                return ln
        raise LookupError(f"no {'TLS' if tls else 'plain'} listener in the config")

    @property
    def port(self) -> int:
        return self._listener(False)["port"]

    @property
    def tls_port(self) -> int:
        return self._listener(True)["port"]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tls_url(self, path: str = "/", host: str = "localhost") -> str:
        return f"https://{host}:{self.tls_port}{path}"

    # ---- lifecycle
    def start(self, timeout: float = 10.0) -> "Estuary":
        self.config_path.write_text(json.dumps(self.config, indent=2))
        if not self.binary.exists():
            raise FileNotFoundError(f"estuary binary not found: {self.binary} (set ESTUARY_BIN)")
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen([*self.prefix, str(self.binary), "-c", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
                                     env=self.env, cwd=str(self.workdir))
        try:
            for ln in self.config.get("listen", []):
                host = ln.get("host", "127.0.0.1")
                host = "127.0.0.1" if host in ("0.0.0.0", "") else host
                wait_for_port(host, ln["port"], timeout, self.proc)
            # the admin listener runs on its own thread and may come up after the workers' ports
            admin = self.config.get("admin")
            if isinstance(admin, dict) and "port" in admin:
                host = admin.get("host", "127.0.0.1")
                host = "127.0.0.1" if host in ("0.0.0.0", "") else host
                wait_for_port(host, admin["port"], timeout, self.proc)
        except Exception as e:
            self.stop()
            raise RuntimeError(f"estuary did not start: {e}\n--- stderr ---\n{self.stderr()}") from e
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> Optional[int]:
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.returncode = "killed after timeout"  # type: ignore[assignment]
                self._close_files()
                self.proc = None
                return None
        self.returncode = self.proc.returncode
        self._close_files()
        self.proc = None
        return self.returncode

    def _close_files(self):
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f is not None and not f.closed:
                f.close()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def check(self, expect_rc: int = 0) -> None:
        """After stop(): exit status and sanitizer reports."""
        err = self.stderr()
        report = sanitizer_report(err)
        assert report is None, f"sanitizer report in estuary stderr:\n{report}"
        assert self.returncode == expect_rc, (
            f"estuary exited with {self.returncode!r}, expected {expect_rc}\n"
            f"--- stderr (tail) ---\n{err[-4000:]}")


def run_estuary(args: List[str], cwd: Optional[Path] = None, timeout: float = 10.0,
                env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Runs the binary to completion (--check, --version, ...); asserts no sanitizer report."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    cp = subprocess.run([str(estuary_bin())] + args, cwd=str(cwd or REPO_ROOT), env=full_env,
                        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    report = sanitizer_report(cp.stderr)
    assert report is None, f"sanitizer report in estuary stderr:\n{report}"
    return cp


# --------------------------------------------------------------------------- config helpers


def upstream(target: Union[Backend, str, List[Union[Backend, str]]], **extra) -> dict:
    """{"targets": [...]} from backends (their 127.0.0.1 URL) or URL strings, plus extra keys."""
    items = target if isinstance(target, list) else [target]
    urls = [t.url if isinstance(t, Backend) else t for t in items]
    return dict({"targets": urls}, **extra)


def named_upstream(name: str, backend: Backend, scheme: str = "http", **extra) -> dict:
    """An upstream reaching `backend` through host `name` (resolved by DNS / the hosts file)."""
    return dict({"targets": [f"{scheme}://{name}:{backend.port}"]}, **extra)


def aggregate_route(path: str, backends: List[dict], **extra) -> dict:
    return dict({"path": path, "backends": backends}, **extra)


def demo_config(users_upstream: dict, orders_upstream: dict) -> dict:
    """The default demo (conf/estuary.json) routes with the given upstreams."""
    return {
        "upstreams": {"users": users_upstream, "orders": orders_upstream},
        "routes": [
            {"path": "/gateway/{user_id}/{order_id}", "methods": ["GET"],
             "backends": [
                 {"upstream": "users", "path": "/users/{user_id}", "group": "user"},
                 {"upstream": "orders", "path": "/orders/{order_id}", "group": "order"}]},
            {"path": "/api/users/{rest...}", "proxy": {"upstream": "users", "path": "/users/{rest...}"}},
        ],
    }


# --------------------------------------------------------------------------- clients


@dataclass
class Response:
    status: int
    headers: CIMultiDictProxy
    body: bytes
    version: str = ""
    elapsed: float = 0.0

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def header_list(self, name: str) -> List[str]:
        return self.headers.getall(name, [])


async def _aio_request(method, url, headers, data, timeout, ssl_ctx):
    conn = TCPConnector(force_close=True, ssl=ssl_ctx if ssl_ctx is not None else False)
    async with ClientSession(connector=conn, timeout=ClientTimeout(total=timeout),
                             auto_decompress=False) as s:
        t0 = time.monotonic()
        async with s.request(method, url, headers=headers, data=data, allow_redirects=False) as r:
            body = await r.read()
            return Response(r.status, CIMultiDictProxy(CIMultiDict(r.headers)), body,
                            f"{r.version.major}.{r.version.minor}", time.monotonic() - t0)


def http_request(aio: AsyncLoop, method: str, url: str, headers: Optional[dict] = None,
                 data: Optional[bytes] = None, timeout: float = 15.0,
                 ssl_ctx: Optional[ssl.SSLContext] = None) -> Response:
    """One HTTP/1.1 request with aiohttp (new connection, closed after), bounded by `timeout`."""
    return aio.run(_aio_request(method, url, headers, data, timeout, ssl_ctx), timeout + 5)


def http_concurrent(aio: AsyncLoop, reqs: List[tuple], timeout: float = 15.0) -> List[Response]:
    """Several requests at once: reqs = [(method, url, headers, data), ...]."""
    async def all_():
        return await asyncio.gather(*[_aio_request(m, u, h, d, timeout, None) for m, u, h, d in reqs])
    return aio.run(all_(), timeout + 5)


def _read_chunked(data: bytes) -> bytes:
    out, pos = b"", 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            return out
        out += data[pos:pos + size]
        pos += size + 2


def raw_http(port: int, request: bytes, host: str = "127.0.0.1", timeout: float = 15.0) -> Response:
    """Sends `request` bytes as is over one TCP connection and reads until the server closes
    (send `Connection: close`). Parses status, headers and (chunked or plain) body. A reset
    after the response arrived is tolerated."""
    t0 = time.monotonic()
    data = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"no complete response head; got {data[:500]!r}")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = CIMultiDict()
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers.add(k.strip(), v.strip())
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        body = _read_chunked(body)
    elif "Content-Length" in headers:
        body = body[:int(headers["Content-Length"])]
    return Response(int(status), CIMultiDictProxy(headers), body, version, time.monotonic() - t0)


class RawBackend:
    """A plain TCP server (thread per connection) that records every byte it receives and
    answers each request head it sees with a fixed 200 JSON reply (Content-Length, keep-alive).
    A request head whose path starts with /hang gets no reply. Used to prove that nothing of a
    refused request reaches a backend (received == b"", connections == 0), and to see when
    the gateway closes an upstream connection (closed counts connections ended by the peer)."""

    def __init__(self, host: str = "127.0.0.1"):
        self._lock = threading.Lock()
        self._data = bytearray()
        self.connections = 0
        self.closed = 0
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind((host, 0))
        self._srv.listen(64)
        self.host, self.port = self._srv.getsockname()[:2]
        self._stop = False
        self._conns: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def received(self) -> bytes:
        with self._lock:
            return bytes(self._data)

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket):
        buf = b""
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                with self._lock:
                    self._data += chunk
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    if head.split(b" ", 2)[1:2] and head.split(b" ", 2)[1].startswith(b"/hang"):
                        continue
                    body = b'{"raw": true}'
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                              % (len(body), body))
        except OSError:
            pass
        finally:
            with self._lock:
                self.closed += 1
            try:
                c.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        try:
            self._srv.close()
        except OSError:
            pass
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass


def curl(*args: str, timeout: float = 20.0) -> Response:
    """Runs curl with `args` (URL included); returns status, headers of the last response,
    body and the HTTP version ("1.1", "2"). Raises AssertionError when curl itself fails."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        hfile, bfile = os.path.join(d, "h"), os.path.join(d, "b")
        t0 = time.monotonic()
        cp = subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), "-D", hfile, "-o", bfile,
                             "-w", "%{http_code} %{http_version}", *args],
                            capture_output=True, text=True, timeout=timeout + 5,
                            stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - t0
        assert cp.returncode == 0, f"curl {' '.join(args)} failed ({cp.returncode}): {cp.stderr}"
        code, version = cp.stdout.split()
        raw = Path(hfile).read_bytes().decode("latin-1")
        body = Path(bfile).read_bytes() if os.path.exists(bfile) else b""
    blocks = [b for b in raw.split("\r\n\r\n") if b.strip()]
    headers = CIMultiDict()
    for ln in (blocks[-1].split("\r\n")[1:] if blocks else []):
        k, _, v = ln.partition(":")
        headers.add(k.strip(), v.strip())
    return Response(int(code), CIMultiDictProxy(headers), body, version, elapsed)


# --------------------------------------------------------------------------- assertions


def parse_server_timing(value: str) -> Dict[str, Dict[str, str]]:
    """'user;dur=3.1;desc="200", order;dur=1000.2;desc="timeout"' ->
    {"user": {"dur": "3.1", "desc": "200"}, "order": {...}} (desc unquoted)."""
    out: Dict[str, Dict[str, str]] = {}
    for entry in re.split(r",\s*(?=[^;,\"]+(?:;|,|$))", value.strip()):
        if not entry.strip():
            continue
        parts = [p.strip() for p in entry.split(";")]
        params = {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
        out[parts[0]] = params
    return out


def server_timing(resp: Response) -> Dict[str, Dict[str, str]]:
    values = resp.header_list("Server-Timing")
    assert values, "no Server-Timing header"
    return parse_server_timing(", ".join(values))


def assert_json_error(resp: Response, status: int, code: Optional[str] = None) -> dict:
    """Asserts an estuary error document: status, JSON content type and the error object shape."""
    assert resp.status == status, f"status {resp.status} != {status}; body: {resp.body[:500]!r}"
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip().lower() == "application/json", f"Content-Type {ctype!r}"
    doc = resp.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), doc
    err = doc["error"]
    assert err.get("status") == status, err
    assert isinstance(err.get("code"), str) and err["code"], err
    if code is not None:
        assert err["code"] == code, err
    assert isinstance(err.get("message"), str) and err["message"], err
    assert isinstance(err.get("request_id"), str) and REQUEST_ID_RE.match(err["request_id"]), err
    return err


# --------------------------------------------------------------------------- TLS


@dataclass
class TlsMaterial:
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path     # CN/SAN localhost, IP 127.0.0.1, signed by the CA
    server_key: Path
    selfsigned_cert: Path  # CN/SAN localhost, IP 127.0.0.1, self-signed
    selfsigned_key: Path

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        return ctx

    def server_context(self, selfsigned: bool = False) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if selfsigned:
            ctx.load_cert_chain(str(self.selfsigned_cert), str(self.selfsigned_key))
        else:
            ctx.load_cert_chain(str(self.server_cert), str(self.server_key))
        return ctx


def _openssl(*args: str, cwd: Path) -> None:
    cp = subprocess.run(["openssl", *args], cwd=str(cwd), capture_output=True, text=True, timeout=60,
                        stdin=subprocess.DEVNULL)
    if cp.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {cp.stderr}")


def make_tls_material(d: Path) -> TlsMaterial:
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    san = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3",
             "-subj", "/CN=estuary e2e CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "server.ext").write_text(f"{san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                                  "keyUsage=critical,digitalSignature,keyEncipherment\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "3", "-extfile", "server.ext", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "selfsigned.key", "-out", "selfsigned.pem", "-days", "3",
             "-subj", "/CN=localhost", "-addext", san, cwd=d)
    return TlsMaterial(d, d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key",
                       d / "selfsigned.pem", d / "selfsigned.key")
