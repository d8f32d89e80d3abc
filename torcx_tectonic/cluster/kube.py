"""The Kubernetes api-server: kubeconfig loading and the few calls we make.

Credentials come from a kubeconfig (embedded data, file paths or a bearer
token). TLS verification is never silently off: a kubeconfig that asks to
skip it is honoured only with a loud warning.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..config import NetworkSettings
from ..edges.http import make_session, read_body, request, timeouts
from ..edges.inputfile import KUBE_VERSION, NODE_NAME, grammar, is_url, parse_json, read_bytes, read_text
from ..edges.yamldoc import load_mapping
from ..errors import InputError, NetworkError, shown

log = logging.getLogger(__name__)

#: The largest answer read from the api-server (a node object is a few KiB).
MAX_API_BYTES = 4 << 20
#: How much of a failed call's answer an error quotes.
STATUS_CHARS = 200


@dataclass(frozen=True)
class Credentials:
    """What a kubeconfig says about reaching one api-server."""

    server: str
    ca_pem: bytes | None
    cert_pem: bytes | None
    key_pem: bytes | None
    token: str | None
    insecure: bool


#: What a kubeconfig field is, as kubectl's types say, in an error's words.
_KINDS: dict[type, str] = {str: "a string", bool: "true or false (a YAML boolean)", list: "a list", dict: "a mapping"}
#: A bearer token goes into an HTTP header: visible ASCII only.
_TOKEN = grammar("a bearer token of visible ASCII characters", r"[!-~]+", 64 * 1024)
#: Certificates, keys and token files referenced by a kubeconfig.
MAX_MATERIAL_BYTES = 256 * 1024


def _typed(entry: Mapping[str, Any], key: str, kind: type, origin: str, where: str) -> Any:
    """``entry[key]`` if it has the type kubectl gives that field; None when
    absent or null (kubectl's zero value). Never a truth test: the string
    "false" is not a boolean, and is an error rather than true."""
    value = entry.get(key)
    if value is not None and not isinstance(value, kind):
        raise InputError(f"{origin}: {where}.{key} is {_kind_of(value)}; expected {_KINDS[kind]}")
    return value


def _kind_of(value: object) -> str:
    if isinstance(value, str):
        return f"the string {shown(value)}"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {shown(value)}"
    return shown(value)


def _named(document: Mapping[str, Any], field: str, kind: str, name: str, origin: str) -> tuple[str, dict[str, Any]]:
    """The ``kind`` entry called ``name`` in the list ``field`` and where it
    is; a name listed twice is refused (which one kubectl uses is a guess)."""
    items = _typed(document, field, list, origin, "kubeconfig") or []
    found: tuple[str, dict[str, Any]] | None = None
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise InputError(f"{origin}: {where} is {_kind_of(item)}; expected a mapping with name and {kind}")
        item_name = _typed(item, "name", str, origin, where)
        if item_name in seen:
            raise InputError(f"{origin}: {field}[{seen[item_name]}] and {where} are both named {shown(item_name)}; "
                             "expected each name once")
        if item_name is not None:
            seen[item_name] = index
        if item_name == name:
            found = (f"{where}.{kind}", _typed(item, kind, dict, origin, where) or {})
    if found is None:
        raise InputError(f"{origin}: no {kind} named {shown(name)} in {field}")
    return found


def _material(entry: Mapping[str, Any], key: str, base: Path, origin: str, where: str) -> bytes | None:
    data, path = _typed(entry, f"{key}-data", str, origin, where), _typed(entry, key, str, origin, where)
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:  # binascii.Error, or characters outside ASCII
            raise InputError(f"{origin}: {where}.{key}-data is not valid base64") from None
    if path:
        return read_bytes(base / path, f"the {key} named in {origin}", limit=MAX_MATERIAL_BYTES)
    return None


def _server(cluster: Mapping[str, Any], origin: str, where: str) -> str:
    server = _typed(cluster, "server", str, origin, where)
    if not is_url(server, ("https",)):
        raise InputError(f"{origin}: {where}.server {shown(server)} is not an https:// URL with a host")
    return str(server).rstrip("/")


def _token(user: Mapping[str, Any], base: Path, origin: str, where: str) -> str | None:
    token = _typed(user, "token", str, origin, where)
    token_file = _typed(user, "tokenFile", str, origin, where)
    if not token and token_file:
        # kubectl trims the file's whitespace (a trailing newline is usual)
        token = read_text(base / token_file, f"the tokenFile named in {origin}", limit=MAX_MATERIAL_BYTES).strip()
        return _TOKEN.check(token, "token", str(base / token_file))
    return _TOKEN.check(token, "token", f"{origin}: {where}") if token else None


def parse_kubeconfig(text: str, origin: str, base: Path) -> Credentials:
    """Resolve the current context of a kubeconfig into credentials;
    relative file paths are taken relative to ``base``. Every field used has
    the type kubectl gives it."""
    document = load_mapping(text, origin, "a kubeconfig mapping (apiVersion: v1, kind: Config)")
    current = _typed(document, "current-context", str, origin, "kubeconfig")
    if not current:
        contexts = _typed(document, "contexts", list, origin, "kubeconfig")
        if not contexts or len(contexts) != 1 or not isinstance(contexts[0], dict):
            raise InputError(f"{origin}: no current-context and not exactly one context")
        current = _typed(contexts[0], "name", str, origin, "contexts[0]") or ""
    where, context = _named(document, "contexts", "context", current, origin)
    cluster_name = _typed(context, "cluster", str, origin, where) or ""
    user_name = _typed(context, "user", str, origin, where)
    cluster_where, cluster = _named(document, "clusters", "cluster", cluster_name, origin)
    user_where, user = _named(document, "users", "user", user_name, origin) if user_name else ("user", {})
    insecure = _typed(cluster, "insecure-skip-tls-verify", bool, origin, cluster_where) is True
    creds = Credentials(
        server=_server(cluster, origin, cluster_where),
        ca_pem=_material(cluster, "certificate-authority", base, origin, cluster_where),
        cert_pem=_material(user, "client-certificate", base, origin, user_where),
        key_pem=_material(user, "client-key", base, origin, user_where),
        token=_token(user, base, origin, user_where),
        insecure=insecure,
    )
    if insecure and creds.ca_pem is not None:  # kubectl refuses this combination too
        raise InputError(f"{origin}: {cluster_where} sets both insecure-skip-tls-verify and a certificate-authority; "
                         "expected one of them")
    if (creds.cert_pem is None) != (creds.key_pem is None):
        raise InputError(f"{origin}: a client certificate needs both client-certificate and client-key")
    if not creds.token and creds.cert_pem is None:
        raise InputError(f"{origin}: user has neither a client certificate nor a token")
    return creds


def load_kubeconfig(path: Path) -> Credentials:
    text = read_text(path, "a kubeconfig (apiVersion: v1, kind: Config)")
    return parse_kubeconfig(text, str(path), path.parent)


class KubeClient:
    """A requests session set up from credentials; use as a context manager
    so the temporary key material is removed."""

    def __init__(self, creds: Credentials, network: NetworkSettings, *, connect_retries: int | None = None) -> None:
        self.creds = creds
        self.network = network
        self._tmp = tempfile.TemporaryDirectory(prefix="torcx-tectonic-kube.")
        self.session = make_session(network, connect_retries=connect_retries)
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

    def _json(self, method: str, segments: tuple[str, ...], what: str, *, missing_ok: bool = False,
              **kwargs: Any) -> Any:
        """Call the api-server at the path made of ``segments``, each quoted
        whole: a name can never add a path segment or a ``..``."""
        url = self.creds.server + "".join("/" + quote(segment, safe="") for segment in segments)
        with request(self.session, method, url, what, timeout=timeouts(self.network), stream=True,
                     **kwargs) as response:
            if missing_ok and response.status_code == 404:
                return None
            body = read_body(response, MAX_API_BYTES, what, url)
            if response.status_code >= 400:
                raise NetworkError(f"{what}: {method} {url} answered {response.status_code}: {_status_message(body)}")
            try:
                return parse_json(body, f"{method} {url}", "a JSON answer")
            except InputError as err:
                raise NetworkError(f"{what}: {err}") from None

    def version(self) -> str:
        """The cluster's gitVersion, exactly as answered and checked as such."""
        body = self._json("GET", ("version",), "api-server version")
        version = body.get("gitVersion") if isinstance(body, dict) else None
        if not isinstance(version, str) or not version:
            raise NetworkError(f"api-server version: {self.creds.server}/version has no gitVersion")
        KUBE_VERSION.check(version, "gitVersion", f"api-server version: {self.creds.server}/version")
        return version

    def configmap_value(self, namespace: str, name: str, key: str) -> str | None:
        what = f"ConfigMap {namespace}/{name}"
        body = self._json("GET", ("api", "v1", "namespaces", namespace, "configmaps", name), what, missing_ok=True)
        if body is None:
            return None
        data = body.get("data") if isinstance(body, dict) else None
        if data is not None and not isinstance(data, dict):
            raise NetworkError(f"{what}: data is {shown(data)}; expected a mapping of keys to text")
        value = (data or {}).get(key)
        return value if isinstance(value, str) else None

    def node(self, name: str) -> dict[str, Any]:
        """The node object; its metadata, labels and annotations, when
        present, are mappings (callers look into them)."""
        what = f"node {name}"
        body = self._json("GET", ("api", "v1", "nodes", check_node_name(name)), what)
        if not isinstance(body, dict):
            raise NetworkError(f"{what}: the api-server answered no object")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise NetworkError(f"{what}: metadata is {shown(metadata)}; expected a mapping")
        for field in ("labels", "annotations"):
            value = (metadata or {}).get(field)
            if value is not None and not isinstance(value, dict):
                raise NetworkError(f"{what}: metadata.{field} is {shown(value)}; expected a mapping")
        return body

    def node_annotation(self, name: str, key: str) -> str | None:
        """The node's annotation ``key`` (None: it has none); annotations are text."""
        value = ((self.node(name).get("metadata") or {}).get("annotations") or {}).get(key)
        if value is not None and not isinstance(value, str):
            raise NetworkError(f"node {name}: metadata.annotations.{key} is {shown(value)}; expected text")
        return value

    def annotate_node(self, name: str, annotations: Mapping[str, str]) -> dict[str, Any]:
        return self.patch_node(name, {"metadata": {"annotations": dict(annotations)}}, f"annotate node {name}")

    def patch_node(self, name: str, patch: Mapping[str, Any], what: str) -> dict[str, Any]:
        """A JSON merge patch of the node: it changes exactly the keys it
        names (null removes one), so what others wrote on the node stays."""
        body = self._json("PATCH", ("api", "v1", "nodes", check_node_name(name)), what, json=dict(patch),
                          headers={"Content-Type": "application/merge-patch+json"})
        return body if isinstance(body, dict) else {}


def check_node_name(name: str) -> str:
    """A node name as Kubernetes allows it; the host name kubelet uses by
    default can be anything the host was called, so it is checked here, at
    the one place a name enters a URL."""
    return NODE_NAME.check(name, "node name", "kubernetes", hint="set [kubernetes] node_name")


def _status_message(body: bytes) -> str:
    """What a failed call's answer says: a Kubernetes Status message, or
    the start of whatever else it is."""
    text = body.decode("utf-8", errors="replace")
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        answer = None
    message = answer.get("message") if isinstance(answer, dict) else None
    return " ".join((message if isinstance(message, str) else text).split())[:STATUS_CHARS]
