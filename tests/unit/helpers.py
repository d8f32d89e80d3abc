"""Small builders shared by the unit tests."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from torcx_tectonic.config import Config, RawValue, build


def make_config(values: Mapping[str, str] | None = None, sources: tuple[Path, ...] = ()) -> Config:
    """A Config from ``{"section.key": "text"}`` overrides; the node name is
    fixed so nothing depends on the host name."""
    raw: dict[tuple[str, str], RawValue] = {("kubernetes", "node_name"): RawValue("node-1", "test")}
    for name, value in (values or {}).items():
        section, key = name.split(".")
        raw[(section, key)] = RawValue(value, f"test:{name}")
    return build(raw, sources)


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by content, symlinks by target,
    directories as ``<dir>``; keys are paths relative to ``root``."""
    entries: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            entries[rel] = "-> " + str(path.readlink())
        elif path.is_dir():
            entries[rel] = "<dir>"
        else:
            entries[rel] = path.read_text()
    return entries


class Routes(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (status, body)`` or ``(status, body,
    headers)`` (which replace the usual ones); everything else is 404."""

    server: RoutedServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        status, body, *extra = self.server.routes.get(self.path, (404, b"not found"))
        headers = extra[0] if extra else {"Content-Length": str(len(body)), "Content-Type": "application/json"}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class RoutedServer(http.server.ThreadingHTTPServer):
    routes: dict[str, tuple[int, bytes] | tuple[int, bytes, dict[str, str]]]
    requests: list[str]
    scheme: str

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"


@contextmanager
def http_server(tls: TlsFiles | None = None) -> Iterator[RoutedServer]:
    """A local HTTP server on 127.0.0.1 with a route table the test fills;
    HTTPS with the certificate of ``tls``."""
    server = RoutedServer(("127.0.0.1", 0), Routes)
    server.routes = {}
    server.requests = []
    server.scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.scheme = "https"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 (its own trust anchor) and its key, as PEM files."""

    cert: Path
    key: Path


def self_signed(directory: Path, name: str = "server") -> TlsFiles:
    """A certificate for 127.0.0.1 that is its own CA; a second call gives
    an unrelated one (a bundle that must not be trusted)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"torcx-tectonic test {name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(directory / f"{name}.crt", directory / f"{name}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


#: The document every prepared signature signs.
SIGNED_DATA = b'{"kind": "torcx-package-list-v0", "value": {"packages": []}}\n'


@dataclass(frozen=True)
class Keys:
    """A GNUPGHOME with four keys and their exported public keyrings.

    ``trusted`` is the key the keyrings under test hold; ``other`` is an
    unrelated key (NO_PUBKEY); ``revoked`` and ``expired`` signed SIGNED_DATA
    while they were valid and are exported revoked/expired.
    """

    home: Path
    fingerprints: dict[str, str]
    keyring: Path  # binary (gpg --export), trusted key only
    keyring_armored: Path  # gpg --armor --export, trusted key only
    keyring_gpg_dearmored: Path  # gpg --dearmor of the armored keyring
    other_keyring: Path  # binary, the unrelated key only
    revoked_keyring: Path  # binary, the revoked key (revocation imported)
    expired_keyring: Path  # binary, the expired key
    revoked_signature: bytes  # of SIGNED_DATA
    expired_signature: bytes  # of SIGNED_DATA

    def gpg(self, *args: str, data: bytes | None = None) -> bytes:
        return gpg_run(self.home, *args, data=data)

    def sign(self, data: bytes, key: str = "trusted") -> bytes:
        """An ASCII-armored detached signature of ``data``."""
        return self.gpg("--armor", "--detach-sign", "--local-user", self.fingerprints[key], data=data)


def gpg_run(home: Path, *args: str, data: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["gpg", "--batch", "--quiet", "--no-tty", "--homedir", str(home), *args],
        input=data,
        capture_output=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def gpg_fingerprint(home: Path, uid: str) -> str:
    listing = gpg_run(home, "--with-colons", "--list-keys", uid).decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


class Clock:
    """Time that passes only when the code under test sleeps: called, or as
    ``time.time``/``time.monotonic``, with ``sleep`` beside it."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    time = monotonic = __call__

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def dead_pid() -> int:
    """The pid of a process that has ended (reaped): a writer that is gone."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
