"""A throwaway certificate authority for the integration tests.

The bucket and api-server stand-ins speak real TLS, and the api-server asks
for client certificates exactly as a kube-apiserver does, so the tests need a
CA, a server certificate that is valid for the address the node dials
(``127.0.0.1`` and ``localhost``), and a kubelet-style client certificate
(``CN=system:node:<name>``, ``O=system:nodes``).  Everything is generated with
python3-cryptography (no ``openssl`` subprocesses: faster and no output to
parse) and written as PEM files, because the product reads file paths and
base64 PEM from kubeconfigs and configuration, never Python objects.

Keys are ECDSA P-256 by default: every TLS stack the product can meet
(OpenSSL behind requests/urllib3, Go, curl) accepts them, and they are
generated in microseconds where RSA takes noticeable time per test.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

#: Certificates start a day in the past so that a container or VM whose clock
#: is slightly behind the test host still accepts them.
_BACKDATE = datetime.timedelta(days=1)
_LIFETIME = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, both as PEM files on disk."""

    cert: Path
    key: Path

    @property
    def cert_pem(self) -> bytes:
        """The certificate in PEM form (what kubeconfig ``*-data`` fields embed, base64-encoded)."""
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        """The unencrypted PKCS#8 private key in PEM form."""
        return self.key.read_bytes()

    def requests_cert(self) -> tuple[str, str]:
        """The ``cert=`` argument for :mod:`requests`, which wants string paths."""
        return (str(self.cert), str(self.key))


@dataclass(frozen=True)
class Pki:
    """A CA with one server and one node client certificate, all under ``dir``.

    ``issue_client`` makes further client certificates from the same CA, for
    tests that need a second node's identity; a second ``make_pki`` gives an
    unrelated CA, for tests that need a certificate the servers must refuse.
    """

    dir: Path
    ca: CertPair
    server: CertPair
    client: CertPair
    node_name: str
    key_type: KeyType = "ec"

    # Flat accessors, because most call sites want exactly one of these.
    @property
    def ca_cert(self) -> Path:
        """Path of the CA certificate (the trust anchor for both sides)."""
        return self.ca.cert

    @property
    def ca_cert_pem(self) -> bytes:
        """PEM bytes of the CA certificate."""
        return self.ca.cert_pem

    @property
    def server_cert(self) -> Path:
        """Path of the server certificate (SAN ``127.0.0.1``, ``::1``, ``localhost``)."""
        return self.server.cert

    @property
    def server_key(self) -> Path:
        """Path of the server private key."""
        return self.server.key

    @property
    def client_cert(self) -> Path:
        """Path of the node client certificate (``CN=system:node:<name>``)."""
        return self.client.cert

    @property
    def client_key(self) -> Path:
        """Path of the node client private key."""
        return self.client.key

    @property
    def client_cert_pem(self) -> bytes:
        """PEM bytes of the node client certificate."""
        return self.client.cert_pem

    @property
    def client_key_pem(self) -> bytes:
        """PEM bytes of the node client private key."""
        return self.client.key_pem

    def issue_client(
        self, stem: str, common_name: str, organizations: Sequence[str] = ()
    ) -> CertPair:
        """Sign another client certificate with this CA, written as ``<stem>.crt``/``.key``."""
        ca_key = _load_key(self.ca.key)
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem)
        return _issue(
            self.dir, stem, ca_cert, ca_key, _name(common_name, organizations),
            server=False, key_type=self.key_type,
        )

    def server_context(
        self, client_auth: ssl.VerifyMode = ssl.CERT_NONE
    ) -> ssl.SSLContext:
        """A server-side TLS context presenting the server certificate.

        With ``client_auth`` other than ``CERT_NONE`` the CA is loaded as the
        trust anchor for client certificates, like kube-apiserver's
        ``--client-ca-file``.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.server.cert), str(self.server.key))
        ctx.verify_mode = client_auth
        if client_auth != ssl.CERT_NONE:
            ctx.load_verify_locations(cafile=str(self.ca.cert))
        return ctx

    def client_context(self, with_client_cert: bool = False) -> ssl.SSLContext:
        """A client-side TLS context trusting this CA (for harness-side checks)."""
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        if with_client_cert:
            ctx.load_cert_chain(str(self.client.cert), str(self.client.key))
        return ctx


def make_pki(dir: Path, node_name: str = "node-1", key_type: KeyType = "ec") -> Pki:
    """Create a CA, a server and a node client certificate under ``dir``.

    Files: ``ca.crt``/``ca.key``, ``server.crt``/``server.key``,
    ``client.crt``/``client.key`` (keys mode 0600, like real kubelet keys).
    """
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    ca_key = _new_key(key_type)
    ca_name = _name("torcx-tectonic test CA", ["torcx-tectonic tests"])
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca = _write(dir, "ca", ca_cert, ca_key)
    server = _issue(
        dir, "server", ca_cert, ca_key, _name("localhost", []),
        server=True, key_type=key_type,
    )
    client = _issue(
        dir, "client", ca_cert, ca_key,
        _name(f"system:node:{node_name}", ["system:nodes"]),
        server=False, key_type=key_type,
    )
    return Pki(dir=dir, ca=ca, server=server, client=client,
               node_name=node_name, key_type=key_type)


def _new_key(key_type: KeyType) -> _PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _load_key(path: Path) -> _PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise TypeError(f"{path}: unexpected key type {type(key).__name__}")
    return key


def _name(common_name: str, organizations: Sequence[str]) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _issue(
    dir: Path,
    stem: str,
    ca_cert: x509.Certificate,
    ca_key: _PrivateKey,
    subject: x509.Name,
    *,
    server: bool,
    key_type: KeyType,
) -> CertPair:
    key = _new_key(key_type)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=key_type == "rsa", data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        # Key identifiers: strict X.509 verification (Python >= 3.13 default,
        # Go) wants the AKI to chain to the CA's SKI.
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
                x509.DNSName("localhost"),
            ]),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return _write(dir, stem, cert, key)


def _write(dir: Path, stem: str, cert: x509.Certificate, key: _PrivateKey) -> CertPair:
    cert_path = dir / f"{stem}.crt"
    key_path = dir / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return CertPair(cert=cert_path, key=key_path)
