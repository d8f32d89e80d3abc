"""A minimal forward HTTP proxy, so tests can prove which traffic used it.

Nodes often reach the release bucket only through ``HTTPS_PROXY`` while the
api-server must be reached directly (``NO_PROXY``).  This proxy does what a
squid or tinyproxy does for that purpose: ``CONNECT host:port`` tunnels for
https (it never sees inside the TLS) and absolute-URI forwarding for plain
http, and it logs every target.  It runs on 127.0.0.1 in a daemon thread of
the test process.

Because a tunnel carries opaque TLS, the servers behind it cannot see a
``Via`` header; instead the proxy registers the local port of each upstream
connection while it is open, and the harness servers ask
:func:`came_through_proxy` with the peer address of a request.  The port is
registered before any client byte is relayed, so the answer is never racy.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from .closing import Closing

_UPSTREAM_LOCK = threading.Lock()
_UPSTREAM_PORTS: dict[int, int] = {}  # local port -> open connections using it

#: Headers a proxy must not forward (RFC 9110 §7.6.1), plus the proxy's own.
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
        "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    )
)


def came_through_proxy(peer: tuple[str, int]) -> bool:
    """Whether a connection from ``peer`` (host, port) is one a :class:`Proxy` opened."""
    with _UPSTREAM_LOCK:
        return peer[0] in ("127.0.0.1", "::1", "::ffff:127.0.0.1") and peer[1] in _UPSTREAM_PORTS


def _register(sock: socket.socket) -> int:
    port = int(sock.getsockname()[1])
    with _UPSTREAM_LOCK:
        _UPSTREAM_PORTS[port] = _UPSTREAM_PORTS.get(port, 0) + 1
    return port


def _unregister(port: int) -> None:
    with _UPSTREAM_LOCK:
        left = _UPSTREAM_PORTS.get(port, 0) - 1
        if left > 0:
            _UPSTREAM_PORTS[port] = left
        else:
            _UPSTREAM_PORTS.pop(port, None)


@dataclass(frozen=True)
class ProxyRecord:
    """One proxied request: a CONNECT tunnel or a forwarded plain-http request."""

    time: float
    method: str
    target: str  # "host:port"
    url: str  # the absolute URI for forwarding, "host:port" for CONNECT
    status: int  # what the proxy answered the client (200 = tunnel established)
    client: tuple[str, int]


class Proxy(Closing):
    """The proxy: ``start()`` it, point ``HTTPS_PROXY``/``HTTP_PROXY`` at :attr:`url`.

    ``deny`` (a predicate on ``"host:port"``) makes the proxy answer 403, like
    a corporate proxy with an allow-list.
    """

    def __init__(self, deny: Callable[[str], bool] | None = None) -> None:
        self._lock = threading.Lock()
        self._records: list[ProxyRecord] = []
        self.deny = deny
        self._server = _ProxyServer(self)
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> Self:
        """Listen and serve in a daemon thread; returns ``self`` for chaining."""
        if self._thread is None:
            self._server.server_activate()
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"test-proxy:{self.port}", daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and cut every open tunnel (a proxy going away)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.close_all()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()


    @property
    def port(self) -> int:
        """The TCP port it listens on (127.0.0.1)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The value for ``HTTPS_PROXY``/``HTTP_PROXY``: ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    # -- log -----------------------------------------------------------------
    def _record(self, record: ProxyRecord) -> None:
        with self._lock:
            self._records.append(record)

    @property
    def records(self) -> list[ProxyRecord]:
        """Every proxied request so far, oldest first (a copy)."""
        with self._lock:
            return list(self._records)

    def targets(self) -> set[str]:
        """The ``host:port`` targets clients asked for (tunnelled or forwarded)."""
        return {r.target for r in self.records}

    def tunnelled(self, target: str) -> bool:
        """Whether a CONNECT tunnel to ``host:port`` was established."""
        return any(r.method == "CONNECT" and r.status == 200 and r.target == target
                   for r in self.records)

    def used_for_port(self, port: int) -> bool:
        """Whether any request targeted ``port`` (on any host name)."""
        return any(r.target.rsplit(":", 1)[-1] == str(port) for r in self.records)

    def clear(self) -> None:
        """Forget the log (between phases of a test)."""
        with self._lock:
            self._records.clear()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle tunnels must not hang close()

    def __init__(self, owner: Proxy) -> None:
        self.owner = owner
        self._conns_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _ProxyHandler, bind_and_activate=False)
        self.server_bind()

    def track(self, sock: socket.socket, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(sock)

    def close_all(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"
    # Unbuffered: after CONNECT the socket carries TLS, and bytes swallowed by
    # a read buffer would be lost to the tunnel.
    rbufsize = 0
    timeout = 60

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default stderr access log (pytest shows the records)."""

    def _log(self, target: str, url: str, status: int) -> None:
        self.server.owner._record(ProxyRecord(
            time=time.time(), method=self.command, target=target, url=url,
            status=status, client=(str(self.client_address[0]), int(self.client_address[1])),
        ))

    def _refuse(self, target: str, url: str, status: int, reason: str) -> None:
        self._log(target, url, status)
        body = f"{status} {reason}\n".encode()
        self.send_response(status, reason)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    # -- https: CONNECT tunnels ------------------------------------------------
    def do_CONNECT(self) -> None:
        """Open a raw TCP tunnel to ``host:port`` and relay bytes both ways."""
        target = self.path
        host, sep, port_s = target.rpartition(":")
        if not sep or not port_s.isdigit():
            self._refuse(target, target, 400, "Bad Request")
            return
        host = host.strip("[]")
        deny = self.server.owner.deny
        if deny is not None and deny(target):
            self._refuse(target, target, 403, "Forbidden")
            return
        try:
            upstream = socket.create_connection((host, int(port_s)), timeout=10)
        except OSError:
            self._refuse(target, target, 502, "Bad Gateway")
            return
        port = _register(upstream)
        self.server.track(self.connection, True)
        try:
            self._log(target, target, 200)
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            _relay(self.connection, upstream)
        finally:
            _unregister(port)
            self.server.track(self.connection, False)
            upstream.close()

    # -- http: absolute-URI forwarding ----------------------------------------
    def _forward(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            self._refuse(self.path, self.path, 400, "Bad Request")
            return
        port = url.port or 80
        target = f"{url.hostname}:{port}"
        deny = self.server.owner.deny
        if deny is not None and deny(target):
            self._refuse(target, self.path, 403, "Forbidden")
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(target, self.path, 411, "Length Required")
            return
        length = int(self.headers.get("Content-Length", "0") or "0")
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Via"] = "1.1 torcx-test-proxy"
        headers["X-Forwarded-For"] = str(self.client_address[0])
        headers["Connection"] = "close"
        path = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
        conn = http.client.HTTPConnection(url.hostname, port, timeout=30)
        try:
            conn.connect()
            assert conn.sock is not None
            local_port = _register(conn.sock)
            try:
                conn.request(self.command, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                _unregister(local_port)
        except OSError:
            conn.close()
            self._refuse(target, self.path, 502, "Bad Gateway")
            return
        conn.close()
        self._log(target, self.path, resp.status)
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Via", "1.1 torcx-test-proxy")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes between two sockets until both directions reach EOF.

    Half-closes are passed on (``shutdown(SHUT_WR)``) so a client that has
    sent everything can still read the reply.
    """
    a.settimeout(None)
    b.settimeout(None)
    peer = {a: b, b: a}
    open_reads = {a, b}
    while open_reads:
        try:
            readable, _, _ = select.select(list(open_reads), [], [], 60)
        except (OSError, ValueError):
            return
        if not readable:
            return  # idle for a minute: give up like a real proxy would
        for src in readable:
            try:
                chunk = src.recv(65536)
            except OSError:
                return
            if not chunk:
                open_reads.discard(src)
                with contextlib.suppress(OSError):
                    peer[src].shutdown(socket.SHUT_WR)
                continue
            try:
                peer[src].sendall(chunk)
            except OSError:
                return
