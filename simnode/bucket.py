"""The release-bucket stand-in: signed package manifests and addons over HTTP(S).

The product downloads ``torcx_manifest.json`` from a URL template, checks its
ASCII-armored detached OpenPGP signature (``.asc``) with ``gpgv`` against a
configured keyring, then downloads addons and checks their sha512.  To test
that for real, this module:

- makes real OpenPGP keys with ``gpg`` in throwaway ``GNUPGHOME`` s
  (:class:`Signer`) and signs with them;
- builds real torcx addons (:mod:`simnode.addons`) and writes the
  ``torcx-package-list-v0`` manifests of docs/design.md, 'The platform facts it relies on' (:class:`Bucket`);
- serves the tree over real HTTP or HTTPS from a thread of the test process on
  127.0.0.1, which a ``systemd-nspawn`` container sharing the host network
  reaches too, and logs every request so tests can assert what was (not)
  downloaded, and whether it came through the test proxy.

The HTTP plumbing here (:class:`HarnessHTTPServer`, :class:`RequestLog`) is
shared with the api-server stand-in.

gpgv facts the tests rely on (GnuPG 2.2): ``gpgv --keyring`` wants a *binary*
keyring (``gpg --export``); an armored one fails with "invalid packet
(ctb=2d)" and "No public key" (exit 2) -- dearmor it first
(:meth:`Signer.dearmor`).  A ``--keyring`` argument without a slash is looked
up in ``$GNUPGHOME``/``~/.gnupg``, not in the working directory: pass absolute
paths.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .addons import addon_filename, make_addon, sha512_file
from .closing import Closing
from .pki import Pki
from .proxy import came_through_proxy

MANIFEST_NAME = "torcx_manifest.json"
VENDOR_STORE = "/usr/share/torcx/store"


# ---------------------------------------------------------------------------
# OpenPGP
# ---------------------------------------------------------------------------
class Signer(Closing):
    """A real OpenPGP signing key living in its own temporary ``GNUPGHOME``.

    Two ``Signer()`` s are unrelated keys: sign with the second to get a
    signature that is well-formed but does not verify against the first's
    keyring.  ``close()`` stops the gpg-agent this home started and deletes it.
    """

    def __init__(
        self,
        uid: str = "Test Bucket <bucket@test.invalid>",
        algo: str = "ed25519",
    ) -> None:
        # Short path under /tmp: gpg-agent's socket path must fit in sun_path.
        self.home = Path(tempfile.mkdtemp(prefix="gnupg-"))
        self.home.chmod(0o700)
        self.uid = uid
        self._gpg("--quick-gen-key", uid, algo, "sign", "never")
        listing = self._gpg("--with-colons", "--list-secret-keys", uid).decode()
        fprs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
        if not fprs:
            raise RuntimeError(f"gpg made no key for {uid!r}:\n{listing}")
        #: The primary key's fingerprint (40 hex digits).
        self.fingerprint: str = fprs[0]

    def _gpg(self, *args: str, input: bytes | None = None) -> bytes:
        env = dict(os.environ, GNUPGHOME=str(self.home))
        proc = subprocess.run(
            ["gpg", "--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback",
             "--passphrase", "", *args],
            input=input, capture_output=True, env=env, check=False, timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"gpg {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
            )
        return proc.stdout

    def sign_bytes(self, data: bytes) -> bytes:
        """An ASCII-armored detached signature of ``data``."""
        return self._gpg("--local-user", self.fingerprint, "--armor", "--detach-sign",
                         "--output", "-", input=data)

    def sign(self, data_path: Path, sig_path: Path | None = None) -> Path:
        """Write ``<data_path>.asc`` (or ``sig_path``): an armored detached signature."""
        sig_path = Path(sig_path) if sig_path else Path(f"{data_path}.asc")
        _atomic_write(sig_path, self.sign_bytes(Path(data_path).read_bytes()))
        return sig_path

    def export_public(self, armored: bool = False) -> bytes:
        """The public key: binary OpenPGP packets (``gpg --export``) or armored."""
        args = ["--armor", "--export"] if armored else ["--export"]
        return self._gpg(*args, self.fingerprint)

    def write_keyring(self, path: Path, armored: bool = False) -> Path:
        """Write the public key to ``path``; only the binary form works with ``gpgv --keyring``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, self.export_public(armored))
        return path

    @staticmethod
    def dearmor(armored: bytes) -> bytes:
        """Turn an armored key block into the binary form ``gpgv`` reads (``gpg --dearmor``)."""
        proc = subprocess.run(["gpg", "--batch", "--dearmor"], input=armored,
                              capture_output=True, check=True, timeout=30)
        return proc.stdout

    def close(self) -> None:
        """Stop this home's gpg-agent (ours, found by its home) and delete the home."""
        if self.home.exists():
            subprocess.run(["gpgconf", "--kill", "gpg-agent"],
                           env=dict(os.environ, GNUPGHOME=str(self.home)),
                           capture_output=True, check=False, timeout=30)
            shutil.rmtree(self.home, ignore_errors=True)




def gpgv_verify(keyring: Path, sig: Path, data: Path) -> subprocess.CompletedProcess[str]:
    """Run ``gpgv --keyring <abs keyring> sig data`` (returncode 0 = good signature)."""
    return subprocess.run(
        ["gpgv", "--keyring", str(Path(keyring).resolve()), str(sig), str(data)],
        capture_output=True, text=True, check=False, timeout=30,
    )


# ---------------------------------------------------------------------------
# HTTP plumbing shared with the api-server stand-in
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it (recorded when the status was sent)."""

    time: float
    method: str
    path: str  # request target as sent, query included
    status: int
    headers: dict[str, str]
    client: tuple[str, int]
    via_proxy: bool  # the connection was opened by a simnode.proxy.Proxy
    tls: bool
    identity: str | None = None  # authenticated user (api-server), else None
    body: bytes = b""

    @property
    def url_path(self) -> str:
        """The path without query string, percent-decoded."""
        return urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)


@dataclass(frozen=True)
class TLSFailure:
    """A connection whose TLS handshake failed (e.g. the client rejected our cert)."""

    time: float
    client: tuple[str, int]
    error: str


class RequestLog:
    """A thread-safe, append-only list of :class:`RequestRecord`."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._records: list[RequestRecord] = []

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            self._lock.notify_all()

    def all(self) -> list[RequestRecord]:
        """Every record so far, oldest first (a copy)."""
        with self._lock:
            return list(self._records)

    def requests_for(self, prefix: str = "/", method: str | None = None) -> list[RequestRecord]:
        """Records whose decoded path starts with ``prefix`` (and ``method``, if given)."""
        return [r for r in self.all()
                if r.url_path.startswith(prefix) and (method is None or r.method == method)]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def wait_for(self, predicate: Callable[[RequestRecord], bool], timeout: float) -> RequestRecord | None:
        """Block until a record matching ``predicate`` exists; ``None`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for r in self._records:
                    if predicate(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)


@dataclass
class Fault:
    """Misbehaviour for paths under a prefix: answer ``status`` and/or wait
    ``delay`` s first, or answer with a broken body.

    - ``method``: only requests of this method (None: any);
    - ``exact``: only the path ``prefix`` itself (not ``<prefix>.asc``, say);
    - ``times``: only the first this many matching requests (None: every one);
    - ``redirect``: answer 302 to this path (the request's own path: a loop);
    - ``body_bytes``: send the real headers (Content-Length announces the whole
      body) but only this many bytes of the body, then close the connection
      (a truncated body) -- after holding it ``stall`` seconds, or until the
      server closes (a server that stalls mid-body);
    - ``content_length``: announce this Content-Length and send the whole body
      (a body longer than announced, when smaller).
    """

    prefix: str
    status: int | None = None
    delay: float = 0.0
    method: str | None = None
    exact: bool = False
    times: int | None = None
    redirect: str | None = None
    body_bytes: int | None = None
    stall: float = 0.0
    content_length: int | None = None
    used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, path: str, method: str) -> bool:
        """Whether this fault applies to a request (and count it if so)."""
        if not path.startswith(self.prefix) or (self.exact and path != self.prefix) \
                or (self.method is not None and self.method != method):
            return False
        with self._lock:
            if self.times is not None and self.used >= self.times:
                return False
            self.used += 1
            return True


class HarnessHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer on 127.0.0.1:<random>, optionally TLS, for the stand-ins.

    The port is bound at construction (so URLs and kubeconfigs can be written
    before ``start()``; until then connections are refused).  The TLS
    handshake runs in the per-connection thread, so a client that stalls or
    fails the handshake cannot block the accept loop; failures are kept in
    :attr:`tls_failures`.  ``close()`` also cuts kept-alive connections, so a
    closed server is really unreachable.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext | None,
        log: RequestLog,
        name: str,
    ) -> None:
        self.ssl_context = ssl_context
        self.log = log
        self.tls_failures: list[TLSFailure] = []
        self._name = name
        self._conns_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: set when the server closes: a handler holding a body mid-way lets go
        self.unstall = threading.Event()
        #: how many answers are held mid-body right now (a test waits for one)
        self.stalled = 0
        super().__init__(("127.0.0.1", 0), handler, bind_and_activate=False)
        self.server_bind()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self._name}: closed servers cannot be restarted")
        if self._thread is None:
            self.server_activate()
            self._thread = threading.Thread(
                target=self.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"{self._name}:{self.port}", daemon=True,
            )
            self._thread.start()

    def close(self) -> None:
        self.unstall.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._closed = True
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.server_close()

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        if self.ssl_context is not None:
            sock.settimeout(10)
            try:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError) as e:
                with self._conns_lock:
                    self.tls_failures.append(TLSFailure(
                        time.time(), (str(client_address[0]), int(client_address[1])), str(e)))
                return
        with self._conns_lock:
            self._conns.add(sock)
        try:
            handler: Any = self.RequestHandlerClass  # typeshed types it with Self
            handler(sock, client_address, self)
        finally:
            with self._conns_lock:
                self._conns.discard(sock)
            if sock is not request:
                sock.close()


class LoggingHandler(BaseHTTPRequestHandler):
    """Base handler: HTTP/1.1, quiet, and every response status lands in the log.

    ``BaseHTTPRequestHandler.send_response`` calls ``log_request(code)`` for
    every response (``send_error`` included), which is where the record is
    made: the status is known, and for proxied requests the tunnel is still
    open, so ``via_proxy`` is reliable.
    """

    server: HarnessHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection is dropped after this
    # Headers and body are separate writes: without TCP_NODELAY the body waits
    # for the client's delayed ACK (40 ms a request), and a stand-in must answer at once.
    disable_nagle_algorithm = True
    request_body: bytes = b""
    identity: str | None = None

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default stderr access log; the RequestLog has it all."""

    body_fault: Fault | None = None

    def parse_request(self) -> bool:
        """Reset per-request state: one handler serves every request of a kept-alive connection."""
        self.request_body = b""
        self.identity = None
        self.body_fault = None
        return super().parse_request()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = int(code) if not isinstance(code, str) or code.isdigit() else 0
        peer = (str(self.client_address[0]), int(self.client_address[1]))
        self.server.log.append(RequestRecord(
            time=time.time(),
            method=str(getattr(self, "command", "") or ""),
            path=str(getattr(self, "path", "") or ""),
            status=status,
            headers=dict(self.headers.items()) if getattr(self, "headers", None) else {},
            client=peer,
            via_proxy=came_through_proxy(peer),
            tls=isinstance(self.connection, ssl.SSLSocket),
            identity=self.identity,
            body=self.request_body,
        ))

    def read_body(self) -> bytes:
        """Read a Content-Length body (chunked uploads are not needed by any client here)."""
        length = int(self.headers.get("Content-Length", "0") or "0")
        self.request_body = self.rfile.read(length) if length > 0 else b""
        return self.request_body

    def send_bytes(self, status: int, body: bytes, content_type: str,
                   extra: Sequence[tuple[str, str]] = ()) -> None:
        """A complete response with Content-Length (HEAD gets headers only),
        broken as a body fault of this request says."""
        fault = self.body_fault
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        length = fault.content_length if fault is not None and fault.content_length is not None else len(body)
        self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault is None or fault.body_bytes is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:fault.body_bytes])
        self.wfile.flush()
        if fault.stall:
            with self.server._conns_lock:
                self.server.stalled += 1
            try:
                self.server.unstall.wait(fault.stall)
            finally:
                with self.server._conns_lock:
                    self.server.stalled -= 1
        self.close_connection = True

    def apply_fault(self, faults: Sequence[Fault]) -> bool:
        """Apply the first matching fault; True when it already answered the
        request (a status or a redirect). A body fault is kept for the answer."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        for f in faults:
            if f.take(path, self.command):
                if f.delay:
                    time.sleep(f.delay)
                if f.redirect is not None:
                    self.send_bytes(302, b"", "text/plain", [("Location", f.redirect)])
                    return True
                if f.status is not None:
                    body = f"injected fault {f.status} for {path}\n".encode()
                    self.send_bytes(f.status, body, "text/plain")
                    return True
                self.body_fault = f
                return False
        return False


# ---------------------------------------------------------------------------
# The bucket
# ---------------------------------------------------------------------------
@dataclass
class _Version:
    version: str
    sha512: str  # as built, so corrupting the file later makes it wrong
    vendor: bool


@dataclass
class _Release:
    board: str
    os_version: str
    versions: list[_Version]
    default: str | None
    raw: bool = False  # write_raw_manifest took over: never re-render
    extra_packages: list[dict[str, Any]] = field(default_factory=list)


class Bucket(Closing):
    """A release bucket rooted at ``root_dir`` (created if needed), signed by ``signer``.

    Layout (URL path = path under ``root_dir``)::

        /manifests/<board>/<os_version>/torcx_manifest.json
        /manifests/<board>/<os_version>/torcx_manifest.json.asc
        /addons/<board>/<os_version>/docker:<v>.torcx.tgz

    Manifests carry absolute addon URLs, so they are (re)written once the
    base URL is known: releases added before :meth:`serve` are rendered by it.
    """

    def __init__(self, root_dir: Path, signer: Signer) -> None:
        self.root = Path(root_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.signer = signer
        self.log = RequestLog()
        self.faults: list[Fault] = []
        self._releases: dict[tuple[str, str], _Release] = {}
        self._server: HarnessHTTPServer | None = None
        self._url_host = "127.0.0.1"

    # -- content ---------------------------------------------------------------
    def manifest_path(self, board: str, os_version: str) -> Path:
        """Where the manifest of a release lives on disk."""
        return self.root / "manifests" / board / os_version / MANIFEST_NAME

    def signature_path(self, board: str, os_version: str) -> Path:
        """Where its ``.asc`` lives on disk."""
        return Path(f"{self.manifest_path(board, os_version)}.asc")

    def addon_path(self, board: str, os_version: str, version: str, name: str = "docker") -> Path:
        """The addon file on disk (copy it into a node's store for "already there" tests)."""
        return self.root / "addons" / board / os_version / addon_filename(name, version)

    def add_release(
        self,
        board: str,
        os_version: str,
        docker_versions: Sequence[str],
        default: str | None,
        vendor: Iterable[str] = (),
    ) -> Path:
        """Build one real addon per Docker version and publish the signed manifest.

        Versions in ``vendor`` are listed with a vendor-store ``path`` location
        first (they ship in that OS image), then the URL; others with the URL
        only.  ``default=None`` leaves ``defaultVersion`` out.  Returns the
        manifest path (written now if serving, else by :meth:`serve`).
        """
        vendor_set = set(vendor)
        unknown = vendor_set - set(docker_versions)
        if unknown:
            raise ValueError(f"vendor versions {sorted(unknown)} are not in {list(docker_versions)}")
        versions = [
            _Version(v, make_addon(self.addon_path(board, os_version, v), "docker", v), v in vendor_set)
            for v in docker_versions
        ]
        self._releases[(board, os_version)] = _Release(board, os_version, versions, default)
        if self.serving:
            self._render(self._releases[(board, os_version)])
        return self.manifest_path(board, os_version)

    def manifest_document(self, board: str, os_version: str) -> dict[str, Any]:
        """The manifest as a Python object, as it is (or will be) published."""
        rel = self._releases[(board, os_version)]
        entries = []
        for v in rel.versions:
            locations: list[dict[str, str]] = []
            if v.vendor:
                locations.append({"path": f"{VENDOR_STORE}/{addon_filename('docker', v.version)}"})
            locations.append({"url": self.addon_url(board, os_version, v.version)})
            entries.append({
                "version": v.version,
                "hash": f"sha512-{v.sha512}",
                "sourcePackage": f"app-torcx/docker-{v.version}",
                "locations": locations,
            })
        package: dict[str, Any] = {"name": "docker"}
        if rel.default is not None:
            package["defaultVersion"] = rel.default
        package["versions"] = entries
        return {"kind": "torcx-package-list-v0",
                "value": {"packages": [package, *copy.deepcopy(rel.extra_packages)]}}

    def expected_sha512(self, board: str, os_version: str, version: str) -> str:
        """The hash the manifest announces for an addon (hex, no ``sha512-``)."""
        for v in self._releases[(board, os_version)].versions:
            if v.version == version:
                return v.sha512
        raise KeyError(f"{board}/{os_version} has no docker {version}")

    def _render(self, rel: _Release) -> None:
        if rel.raw:
            return
        path = self.manifest_path(rel.board, rel.os_version)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.manifest_document(rel.board, rel.os_version), indent=2) + "\n"
        _atomic_write(path, text.encode())
        self.signer.sign(path)

    # -- breaking things -------------------------------------------------------
    def corrupt_addon(self, board: str, os_version: str, version: str) -> None:
        """Change the addon after it was hashed: same size, different bytes, wrong sha512."""
        path = self.addon_path(board, os_version, version)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        _atomic_write(path, bytes(data))
        assert sha512_file(path) != self.expected_sha512(board, os_version, version)

    def remove_addon(self, board: str, os_version: str, version: str) -> None:
        """Delete an addon file, so its URL answers 404."""
        self.addon_path(board, os_version, version).unlink()

    def resign_with(self, signer: Signer, board: str | None = None, os_version: str | None = None) -> None:
        """Re-sign manifests with another (e.g. unrelated) key: valid OpenPGP, wrong key.

        Without ``board``/``os_version`` every manifest in the bucket is re-signed.
        """
        for path in self._manifest_paths(board, os_version):
            signer.sign(path)

    def drop_signature(self, board: str | None = None, os_version: str | None = None) -> None:
        """Delete ``.asc`` files, so the signature URL answers 404."""
        for path in self._manifest_paths(board, os_version):
            Path(f"{path}.asc").unlink(missing_ok=True)

    def write_raw_manifest(self, board: str, os_version: str, text: str | bytes, sign: bool = True) -> Path:
        """Publish arbitrary manifest bytes (malformed JSON, wrong kind, ``../`` versions…).

        With ``sign=True`` it gets a good signature, so the test reaches the
        parser; with ``sign=False`` a previous ``.asc`` is left as it was (a
        signature that no longer matches) -- use :meth:`drop_signature` for
        none.  The release is no longer re-rendered by :meth:`serve`.
        """
        path = self.manifest_path(board, os_version)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, text.encode() if isinstance(text, str) else text)
        rel = self._releases.setdefault((board, os_version), _Release(board, os_version, [], None))
        rel.raw = True
        if sign:
            self.signer.sign(path)
        return path

    def tamper_manifest(self, board: str, os_version: str) -> None:
        """Change the signed manifest after signing (bad signature, otherwise valid JSON)."""
        path = self.manifest_path(board, os_version)
        _atomic_write(path, path.read_bytes().rstrip(b"\n") + b" \n")
        self._releases[(board, os_version)].raw = True

    def set_fault(self, prefix: str, status: int | None = None, delay: float = 0.0, **broken: Any) -> Fault:
        """Make requests under ``prefix`` answer ``status`` and/or stall ``delay``
        seconds, or break their answer as ``broken`` says (see :class:`Fault`)."""
        fault = Fault(prefix, status, delay, **broken)
        self.faults.insert(0, fault)
        return fault

    def clear_faults(self) -> None:
        """No more faults; answers held mid-body are let go."""
        self.faults.clear()
        if self._server is not None:
            self._server.unstall.set()
            self._server.unstall = threading.Event()

    @property
    def stalled(self) -> int:
        """How many answers are held mid-body right now."""
        return self._server.stalled if self._server is not None else 0

    def _manifest_paths(self, board: str | None, os_version: str | None) -> list[Path]:
        if board is not None and os_version is not None:
            return [self.manifest_path(board, os_version)]
        return sorted(p for p in (self.root / "manifests").glob(f"*/*/{MANIFEST_NAME}")
                      if (board is None or p.parent.parent.name == board)
                      and (os_version is None or p.parent.name == os_version))

    # -- serving ---------------------------------------------------------------
    def serve(self, tls: Pki | None = None, url_host: str = "127.0.0.1") -> Bucket:
        """Start serving on 127.0.0.1:<random port> (HTTPS with ``tls``'s server cert).

        ``url_host`` is the host name put in URLs (``127.0.0.1`` or
        ``localhost``; both are in the certificate).  Serving the bucket as
        ``localhost`` and the api-server as ``127.0.0.1`` lets ``NO_PROXY``
        tell them apart in proxy tests.  Renders all pending manifests.
        """
        if self._server is not None:
            raise RuntimeError("bucket already serving")
        ctx = tls.server_context() if tls is not None else None
        self._server = _BucketServer(self, ctx)
        self._url_host = url_host
        self._server.start()
        for rel in self._releases.values():
            self._render(rel)
        return self

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.running

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("bucket not serving: call serve() first")
        return self._server.port

    @property
    def base_url(self) -> str:
        """``http(s)://<url_host>:<port>`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("bucket not serving: call serve() first")
        scheme = "https" if self._server.ssl_context is not None else "http"
        return f"{scheme}://{self._url_host}:{self.port}"

    @property
    def manifest_url_template(self) -> str:
        """The product's URL template, with the literal ``{{.Board}}``/``{{.OSVersion}}`` placeholders."""
        return self.base_url + "/manifests/{{.Board}}/{{.OSVersion}}/" + MANIFEST_NAME

    def manifest_url(self, board: str, os_version: str) -> str:
        return f"{self.base_url}/manifests/{board}/{os_version}/{MANIFEST_NAME}"

    def addon_url(self, board: str, os_version: str, version: str, name: str = "docker") -> str:
        return f"{self.base_url}/addons/{board}/{os_version}/{addon_filename(name, version)}"

    @property
    def tls_failures(self) -> list[TLSFailure]:
        """Handshakes that failed (e.g. a client that does not trust the test CA)."""
        return list(self._server.tls_failures) if self._server else []

    def requests_for(self, prefix: str = "/", method: str | None = None) -> list[RequestRecord]:
        """Logged requests under ``prefix``, e.g. ``requests_for("/addons/")`` == [] for "no download"."""
        return self.log.requests_for(prefix, method)

    def close(self) -> None:
        """Stop serving and cut open connections (the bucket becomes unreachable)."""
        if self._server is not None:
            self._server.close()




_CONTENT_TYPES = {
    ".json": "application/json",
    ".asc": "application/pgp-signature",
    ".tgz": "application/gzip",
}


class _BucketServer(HarnessHTTPServer):
    def __init__(self, bucket: Bucket, ssl_context: ssl.SSLContext | None) -> None:
        self.bucket = bucket
        super().__init__(_BucketHandler, ssl_context, bucket.log, "test-bucket")


class _BucketHandler(LoggingHandler):
    server: _BucketServer

    def do_GET(self) -> None:
        bucket = self.server.bucket
        if self.apply_fault(bucket.faults):
            return
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        root = bucket.root.resolve()
        target = (root / rel).resolve()
        if (target != root and root not in target.parents) or not target.is_file():
            self.send_bytes(404, b"404 Not Found\n", "text/plain")
            return
        data = target.read_bytes()
        ctype = _CONTENT_TYPES.get(target.suffix, "application/octet-stream")
        mtime = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(target.stat().st_mtime))
        self.send_bytes(200, data, ctype, [("Last-Modified", mtime)])

    do_HEAD = do_GET

    def _not_allowed(self) -> None:
        self.read_body()
        self.send_bytes(405, b"405 Method Not Allowed\n", "text/plain", [("Allow", "GET, HEAD")])

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file + rename, so a concurrent GET never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def publish_sysext(bucket: Bucket, images: Sequence[Path], sign: bool = True) -> str:
    """Put runtime images under /sysext/ with their SHA256SUMS (signed, as
    ``SHA256SUMS.asc``); returns the images URL template for the node."""
    directory = bucket.root / "sysext"
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for image in images:
        if image.parent != directory:
            shutil.copyfile(image, directory / image.name)
        lines.append(f"{hashlib.sha256((directory / image.name).read_bytes()).hexdigest()}  {image.name}\n")
    sums = directory / "SHA256SUMS"
    _atomic_write(sums, "".join(lines).encode())
    if sign:
        bucket.signer.sign(sums)
    return f"{bucket.base_url}/sysext/{{{{.Name}}}}-{{{{.Version}}}}-{{{{.Arch}}}}.raw"
