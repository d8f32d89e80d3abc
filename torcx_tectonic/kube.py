"""The Kubernetes api-server: kubeconfig loading and the few calls we make.

Credentials come from a kubeconfig (embedded data, file paths or a bearer
token). TLS verification is never silently off: a kubeconfig that asks to
skip it is honoured only with a loud warning.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from .config import NetworkSettings
from .errors import InputError, NetworkError
from .http import make_session, request, timeouts
from .yamldoc import load_mapping

log = logging.getLogger(__name__)

MAPPINGS_NAMESPACE = "tectonic-system"
MAPPINGS_CONFIGMAP = "tectonic-torcx-runtime-mappings"
MAPPINGS_KEY = "runtime-mappings.yaml"


@dataclass(frozen=True)
class Credentials:
    """What a kubeconfig says about reaching one api-server."""

    server: str
    ca_pem: bytes | None
    cert_pem: bytes | None
    key_pem: bytes | None
    token: str | None
    insecure: bool


def _named(items: Any, name: str, kind: str, origin: str) -> dict[str, Any]:
    if not isinstance(items, list):
        raise InputError(f"{origin}: expected a list of {kind}s")
    for item in items:
        value = item.get(kind) if isinstance(item, dict) and item.get("name") == name else None
        if isinstance(value, dict):
            return value
    raise InputError(f"{origin}: no {kind} named {name!r}")


def _material(entry: Mapping[str, Any], key: str, base: Path, origin: str) -> bytes | None:
    data, path = entry.get(f"{key}-data"), entry.get(key)
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, TypeError):
            raise InputError(f"{origin}: {key}-data is not valid base64") from None
    if path:
        file = base / str(path)
        try:
            return file.read_bytes()
        except OSError as err:
            raise InputError(f"{origin}: {key} {file}: cannot read: {err.strerror}") from None
    return None


def parse_kubeconfig(text: str, origin: str, base: Path) -> Credentials:
    """Resolve the current context of a kubeconfig into credentials;
    relative file paths are taken relative to ``base``."""
    document = load_mapping(text, origin, "a kubeconfig mapping (apiVersion: v1, kind: Config)")
    contexts = document.get("contexts")
    current = document.get("current-context")
    if not current:
        if isinstance(contexts, list) and len(contexts) == 1 and isinstance(contexts[0], dict):
            current = contexts[0].get("name")
        else:
            raise InputError(f"{origin}: no current-context and not exactly one context")
    context = _named(contexts, str(current), "context", origin)
    cluster = _named(document.get("clusters"), str(context.get("cluster")), "cluster", origin)
    user = _named(document.get("users"), str(context.get("user")), "user", origin) if context.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith("https://"):
        raise InputError(f"{origin}: cluster server {server!r} is not an https:// URL")
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token_path = base / str(user["tokenFile"])
        try:
            token = token_path.read_text().strip()
        except OSError as err:
            raise InputError(f"{origin}: tokenFile {token_path}: cannot read: {err.strerror}") from None
    creds = Credentials(
        server=server.rstrip("/"),
        ca_pem=_material(cluster, "certificate-authority", base, origin),
        cert_pem=_material(user, "client-certificate", base, origin),
        key_pem=_material(user, "client-key", base, origin),
        token=str(token) if token else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )
    if (creds.cert_pem is None) != (creds.key_pem is None):
        raise InputError(f"{origin}: a client certificate needs both client-certificate and client-key")
    if not creds.token and creds.cert_pem is None:
        raise InputError(f"{origin}: user has neither a client certificate nor a token")
    return creds


def load_kubeconfig(path: Path) -> Credentials:
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"kubeconfig {path}: cannot read: {err.strerror}") from None
    return parse_kubeconfig(text, str(path), path.parent)


class KubeClient:
    """A requests session set up from credentials; use as a context manager
    so the temporary key material is removed."""

    def __init__(self, creds: Credentials, network: NetworkSettings) -> None:
        self.creds = creds
        self.network = network
        self._tmp = tempfile.TemporaryDirectory(prefix="torcx-tectonic-kube.")
        self.session = make_session(network)
        tmp = Path(self._tmp.name)
        if creds.insecure:
            log.warning("kubeconfig sets insecure-skip-tls-verify: the api-server's identity is NOT verified")
            self.session.verify = False
        elif creds.ca_pem is not None:
            self.session.verify = str(self._write(tmp / "ca.crt", creds.ca_pem))
        if creds.cert_pem is not None and creds.key_pem is not None:
            self.session.cert = (str(self._write(tmp / "client.crt", creds.cert_pem)),
                                 str(self._write(tmp / "client.key", creds.key_pem)))
        if creds.token:
            self.session.headers["Authorization"] = f"Bearer {creds.token}"

    @staticmethod
    def _write(path: Path, data: bytes) -> Path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()
        self._tmp.cleanup()

    def _json(self, method: str, path: str, what: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        url = self.creds.server + path
        with request(self.session, method, url, what, timeout=timeouts(self.network), **kwargs) as response:
            if missing_ok and response.status_code == 404:
                return None
            if response.status_code >= 400:
                detail = _status_message(response)
                raise NetworkError(f"{what}: {method} {url} answered {response.status_code}: {detail}")
            try:
                return response.json()
            except ValueError:
                raise NetworkError(f"{what}: {method} {url} did not answer JSON") from None

    def version(self) -> str:
        body = self._json("GET", "/version", "api-server version")
        version = body.get("gitVersion") if isinstance(body, dict) else None
        if not isinstance(version, str) or not version:
            raise NetworkError(f"api-server version: {self.creds.server}/version has no gitVersion")
        return version

    def configmap_value(self, namespace: str, name: str, key: str) -> str | None:
        body = self._json("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}", f"ConfigMap {namespace}/{name}",
                          missing_ok=True)
        if body is None:
            return None
        value = (body.get("data") or {}).get(key) if isinstance(body, dict) else None
        return value if isinstance(value, str) else None

    def node(self, name: str) -> dict[str, Any]:
        body = self._json("GET", f"/api/v1/nodes/{name}", f"node {name}")
        if not isinstance(body, dict):
            raise NetworkError(f"node {name}: the api-server answered no object")
        return body

    def annotate_node(self, name: str, annotations: Mapping[str, str]) -> dict[str, Any]:
        body = self._json(
            "PATCH", f"/api/v1/nodes/{name}", f"annotate node {name}",
            json={"metadata": {"annotations": dict(annotations)}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        return body if isinstance(body, dict) else {}


def _status_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return str(body)[:200]
