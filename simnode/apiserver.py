"""The Kubernetes api-server stand-in, plus the Container Linux Update Operator's part.

The product talks to the api-server for three things (docs/design.md, 'The platform facts it relies on'): the
cluster version (``GET /version``), the runtime-mappings ConfigMap, and its
own Node object, which it polls for the operator's ``before-reboot`` label
and then annotates.  This stand-in serves exactly those, with the JSON shapes
and status objects a real kube-apiserver returns, over HTTPS with the test
CA, authenticating like one:

- a client certificate signed by the CA (kubelet identity
  ``CN=system:node:<name>, O=system:nodes``) -- checked in the TLS handshake
  (``CERT_OPTIONAL``: a certificate *if given* must verify, as with
  kube-apiserver's ``--client-ca-file``), or
- ``Authorization: Bearer <token>`` for the configured token;
- anything else gets 401 with a ``Status`` object.  Node identities may patch
  only their own Node (what the NodeRestriction admission plugin enforces).

The operator simulation (:meth:`ApiServer.schedule_before_reboot`) does what
the CLUO operator does when it picks a node: it deletes the configured
before-reboot annotations and sets the ``before-reboot`` label, so tests can
check that a hook annotates only *after* that moment.
"""

from __future__ import annotations

import base64
import calendar
import copy
import json
import re
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import yaml

from .bucket import (
    Fault,
    HarnessHTTPServer,
    LoggingHandler,
    RequestLog,
    RequestRecord,
    TLSFailure,
)
from .closing import Closing
from .pki import CertPair, Pki

CLUO_PREFIX = "container-linux-update.v1.coreos.com/"
FLATCAR_PREFIX = "flatcar-linux-update.v1.flatcar-linux.net/"
MAPPINGS_NAMESPACE = "tectonic-system"
MAPPINGS_CONFIGMAP = "tectonic-torcx-runtime-mappings"
MAPPINGS_KEY = "runtime-mappings.yaml"

KubeconfigKind = Literal["certs", "token", "files"]


def status_object(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``metav1.Status`` failure, the body of every api-server error."""
    obj: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    }
    if details is not None:
        obj["details"] = details
    return obj


def version_info(git_version: str) -> dict[str, str]:
    """The ``/version`` body for ``git_version`` (``v1.8.4+coreos.0`` → major 1, minor 8)."""
    core = git_version.lstrip("v").split("+", 1)[0].split("-", 1)[0]
    parts = core.split(".")
    return {
        "major": parts[0] if parts else "",
        "minor": parts[1] if len(parts) > 1 else "",
        "gitVersion": git_version,
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2017-11-29T00:00:00Z",
        "goVersion": "go1.8.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` deletes a key; non-objects replace)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class PatchError(Exception):
    """A patch that cannot apply; ``code``/``reason`` become the Status object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add/remove/replace/test), enough for metadata maps."""
    if not isinstance(ops, list):
        raise PatchError(400, "BadRequest", "json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(400, "BadRequest", f"invalid json patch operation {op!r}")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in str(op["path"]).split("/")[1:]]
        if not tokens:
            raise PatchError(422, "Invalid", "patching the whole object is not supported")
        parent = doc
        for t in tokens[:-1]:
            if not isinstance(parent, dict) or t not in parent:
                raise PatchError(422, "Invalid", f"path {op['path']} does not exist")
            parent = parent[t]
        last = tokens[-1]
        if not isinstance(parent, dict):
            raise PatchError(422, "Invalid", f"path {op['path']}: parent is not an object")
        kind = op["op"]
        if kind == "add":
            parent[last] = copy.deepcopy(op.get("value"))
        elif kind == "replace":
            if last not in parent:
                raise PatchError(422, "Invalid", f"replace: {op['path']} does not exist")
            parent[last] = copy.deepcopy(op.get("value"))
        elif kind == "remove":
            if last not in parent:
                raise PatchError(422, "Invalid", f"remove: {op['path']} does not exist")
            del parent[last]
        elif kind == "test":
            if parent.get(last) != op.get("value"):
                raise PatchError(422, "Invalid", f"test failed at {op['path']}")
        else:
            raise PatchError(400, "BadRequest", f"unsupported json patch op {kind!r}")
    return doc


@dataclass(frozen=True)
class NodeSnapshot:
    """The node's labels and annotations right after a change, and who made it."""

    time: float
    source: str  # "create", "operator", "request:<METHOD> by <identity>", "test"
    resource_version: str
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass
class OperatorAction:
    """A scheduled operator step; ``fired`` is set when it happened, at ``at`` (time.time())."""

    node: str
    prefix: str
    hook_annotations: list[str]
    due: float
    fired: threading.Event = field(default_factory=threading.Event)
    at: float | None = None
    timer: threading.Timer | None = None

    def wait(self, timeout: float) -> bool:
        """Block until the step happened; False on timeout."""
        return self.fired.wait(timeout)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


class ApiServer(Closing):
    """The api-server: bound at construction, serving after :meth:`start`.

    Being bound but not started (or closed) is the "unreachable api-server"
    case: connections to :attr:`url` are refused.  Use it as a context
    manager to get ``start()``/``close()``.
    """

    def __init__(
        self,
        pki: Pki,
        *,
        token: str | None = "test-token",
        git_version: str = "v1.8.4+coreos.0",
        runtime_mappings: str | None = None,
        anonymous_version: bool = False,
    ) -> None:
        self.pki = pki
        self.token = token
        #: Real clusters let anonymous users read /version; off by default.
        self.anonymous_version = anonymous_version
        self.log = RequestLog()
        self.faults: list[Fault] = []
        self._lock = threading.RLock()
        self._version = version_info(git_version)
        self._configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._history: dict[str, list[NodeSnapshot]] = {}
        self._rv = 1
        self._actions: list[OperatorAction] = []
        self._server = _ApiHTTPServer(self, pki.server_context(ssl.CERT_OPTIONAL))
        if runtime_mappings is not None:
            self.set_runtime_mappings(runtime_mappings)

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> Self:
        self._server.start()
        return self

    def close(self) -> None:
        """Stop serving, cut connections and cancel pending operator steps."""
        with self._lock:
            for a in self._actions:
                a.cancel()
        self._server.close()

    def __enter__(self) -> Self:
        return self.start()


    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>`` (the kubeconfig ``server``)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def tls_failures(self) -> list[TLSFailure]:
        """Handshakes that failed, e.g. a client certificate from another CA."""
        return list(self._server.tls_failures)

    def requests_for(self, prefix: str = "/", method: str | None = None) -> list[RequestRecord]:
        return self.log.requests_for(prefix, method)

    def set_fault(self, prefix: str, status: int | None = None, delay: float = 0.0, **broken: Any) -> Fault:
        """Make requests under ``prefix`` answer ``status`` (plain text) and/or
        stall; ``method=``/``times=`` narrow it (see simnode.bucket.Fault)."""
        fault = Fault(prefix, status, delay, **broken)
        self.faults.insert(0, fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- state -----------------------------------------------------------------
    def set_version(self, git_version: str) -> None:
        """Change what ``/version`` answers (an in-place cluster upgrade)."""
        with self._lock:
            self._version = version_info(git_version)

    @property
    def git_version(self) -> str:
        with self._lock:
            return self._version["gitVersion"]

    def set_configmap(self, namespace: str, name: str, data: dict[str, str] | None) -> None:
        """Create/replace a ConfigMap's data, or delete it (``None``)."""
        with self._lock:
            if data is None:
                self._configmaps.pop((namespace, name), None)
                return
            self._configmaps[(namespace, name)] = {
                "kind": "ConfigMap", "apiVersion": "v1",
                "metadata": self._metadata(name, namespace),
                "data": dict(data),
            }

    def set_runtime_mappings(self, mappings: str | dict[str, Any] | None) -> None:
        """Publish ``tectonic-system/tectonic-torcx-runtime-mappings`` (YAML text or object), or remove it."""
        if mappings is None:
            self.set_configmap(MAPPINGS_NAMESPACE, MAPPINGS_CONFIGMAP, None)
            return
        text = mappings if isinstance(mappings, str) else yaml.safe_dump(mappings, sort_keys=False)
        self.set_configmap(MAPPINGS_NAMESPACE, MAPPINGS_CONFIGMAP, {MAPPINGS_KEY: text})

    def create_node(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create (or replace) the Node object; returns a copy."""
        with self._lock:
            meta = self._metadata(name, None)
            meta["labels"] = {
                "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name, **(labels or {}),
            }
            meta["annotations"] = {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                **(annotations or {}),
            }
            self._nodes[name] = {
                "kind": "Node", "apiVersion": "v1", "metadata": meta,
                "spec": {"externalID": name},
                "status": {"nodeInfo": {"kubeletVersion": self._version["gitVersion"],
                                        "osImage": "Container Linux by CoreOS"}},
            }
            self._history[name] = []
            self._snapshot(name, "create")
            return copy.deepcopy(self._nodes[name])

    def node(self, name: str | None = None) -> dict[str, Any]:
        """A copy of the Node object (``name`` may be omitted when there is one node)."""
        with self._lock:
            return copy.deepcopy(self._nodes[self._node_name(name)])

    def annotations(self, name: str | None = None) -> dict[str, str]:
        return dict(self.node(name)["metadata"].get("annotations") or {})

    def labels(self, name: str | None = None) -> dict[str, str]:
        return dict(self.node(name)["metadata"].get("labels") or {})

    def node_history(self, name: str | None = None) -> list[NodeSnapshot]:
        """Every state of the node's labels/annotations, oldest first."""
        with self._lock:
            return list(self._history[self._node_name(name)])

    def update_node_metadata(
        self,
        name: str | None = None,
        *,
        set_labels: dict[str, str] | None = None,
        remove_labels: Sequence[str] = (),
        set_annotations: dict[str, str] | None = None,
        remove_annotations: Sequence[str] = (),
        source: str = "test",
    ) -> None:
        """Change the node from the test side (e.g. the update agent's reboot-needed)."""
        with self._lock:
            node_name = self._node_name(name)
            meta = self._nodes[node_name]["metadata"]
            labels = meta.setdefault("labels", {})
            annotations = meta.setdefault("annotations", {})
            labels.update(set_labels or {})
            annotations.update(set_annotations or {})
            for key in remove_labels:
                labels.pop(key, None)
            for key in remove_annotations:
                annotations.pop(key, None)
            self._bump(node_name, source)

    # -- operator simulation -----------------------------------------------------
    def schedule_before_reboot(
        self,
        prefix: str,
        hook_annotations: Sequence[str],
        after_seconds: float,
        node: str | None = None,
    ) -> OperatorAction:
        """After ``after_seconds``, do what CLUO does when it picks the node.

        It deletes every annotation in ``hook_annotations`` (full keys, e.g.
        ``<prefix>tectonic-torcx-pre-hook-ok``) and sets the label
        ``<prefix>before-reboot="true"``, atomically; the moment is recorded
        in the returned action and in :meth:`node_history`.
        """
        node_name = self._node_name(node)
        action = OperatorAction(node_name, prefix, list(hook_annotations), time.time() + after_seconds)

        def fire() -> None:
            with self._lock:
                if node_name in self._nodes:
                    self.update_node_metadata(
                        node_name,
                        set_labels={f"{prefix}before-reboot": "true"},
                        remove_annotations=action.hook_annotations,
                        source="operator",
                    )
                action.at = time.time()
            action.fired.set()

        action.timer = threading.Timer(after_seconds, fire)
        action.timer.daemon = True
        with self._lock:
            self._actions.append(action)
        action.timer.start()
        return action

    def hooks_ok(self, prefix: str, hook_annotations: Sequence[str], node: str | None = None) -> bool:
        """What CLUO checks next: label still set and every hook annotation ``"true"``."""
        with self._lock:
            meta = self._nodes[self._node_name(node)]["metadata"]
            labels = meta.get("labels") or {}
            annotations = meta.get("annotations") or {}
            return labels.get(f"{prefix}before-reboot") == "true" and all(
                annotations.get(a) == "true" for a in hook_annotations)

    def wait_hooks_ok(self, prefix: str, hook_annotations: Sequence[str], timeout: float,
                      node: str | None = None) -> bool:
        """Poll :meth:`hooks_ok` until true or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            if self.hooks_ok(prefix, hook_annotations, node):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def grant_reboot(self, prefix: str, hook_annotations: Sequence[str], node: str | None = None) -> None:
        """CLUO's last step: drop the label and hook annotations, set ``<prefix>reboot-ok``."""
        self.update_node_metadata(
            node,
            remove_labels=[f"{prefix}before-reboot"],
            remove_annotations=hook_annotations,
            set_annotations={f"{prefix}reboot-ok": "true"},
            source="operator",
        )

    # -- kubeconfig ------------------------------------------------------------
    def kubeconfig(
        self,
        path: Path,
        kind: KubeconfigKind = "certs",
        *,
        client: CertPair | None = None,
        token: str | None = None,
        server: str | None = None,
        files_dir: Path | None = None,
        files_dir_in_node: str | None = None,
    ) -> Path:
        """Write a real kubeconfig (clusters/users/contexts/current-context).

        - ``certs``: CA, client certificate and key embedded as base64 ``*-data``;
        - ``token``: CA embedded, ``token`` (default: the server's token);
        - ``files``: ``certificate-authority``/``client-certificate``/``client-key``
          paths.  The files are copied into ``files_dir`` (default: next to
          the kubeconfig) and referenced as ``files_dir_in_node`` (default: the
          same path) -- set that to the path inside the node's root, e.g.
          ``files_dir=root/"etc/kubernetes/ssl"``, ``files_dir_in_node="/etc/kubernetes/ssl"``.

        ``client`` defaults to the pki's node certificate; ``server`` to :attr:`url`.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        client = client or self.pki.client
        cluster: dict[str, Any] = {"server": server or self.url}
        user: dict[str, Any] = {}
        if kind == "files":
            fdir = Path(files_dir) if files_dir is not None else path.parent
            fdir.mkdir(parents=True, exist_ok=True)
            ref = files_dir_in_node if files_dir_in_node is not None else str(fdir)
            for fname, content, mode in (("ca.crt", self.pki.ca_cert_pem, 0o644),
                                         ("kubelet.crt", client.cert_pem, 0o644),
                                         ("kubelet.key", client.key_pem, 0o600)):
                (fdir / fname).write_bytes(content)
                (fdir / fname).chmod(mode)
            cluster["certificate-authority"] = f"{ref.rstrip('/')}/ca.crt"
            user["client-certificate"] = f"{ref.rstrip('/')}/kubelet.crt"
            user["client-key"] = f"{ref.rstrip('/')}/kubelet.key"
        else:
            cluster["certificate-authority-data"] = _b64(self.pki.ca_cert_pem)
            if kind == "certs":
                user["client-certificate-data"] = _b64(client.cert_pem)
                user["client-key-data"] = _b64(client.key_pem)
            elif kind == "token":
                tok = token or self.token
                if not tok:
                    raise ValueError("kind='token' needs a token (none configured)")
                user["token"] = tok
            else:
                raise ValueError(f"unknown kubeconfig kind {kind!r}; expected certs, token or files")
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": "kubelet", "user": user}],
            "contexts": [{"name": "kubelet-context",
                          "context": {"cluster": "local", "user": "kubelet"}}],
            "current-context": "kubelet-context",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)
        return path

    # -- internals ---------------------------------------------------------------
    def _node_name(self, name: str | None) -> str:
        with self._lock:
            if name is not None:
                if name not in self._nodes:
                    raise KeyError(f"no node {name!r}; create_node() it first")
                return name
            if len(self._nodes) != 1:
                raise KeyError(f"name the node: there are {sorted(self._nodes)}")
            return next(iter(self._nodes))

    def _metadata(self, name: str, namespace: str | None) -> dict[str, Any]:
        self._rv += 1
        meta: dict[str, Any] = {"name": name}
        if namespace is not None:
            meta["namespace"] = namespace
            meta["selfLink"] = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        else:
            meta["selfLink"] = f"/api/v1/nodes/{name}"
        meta.update({
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(self._rv),
            "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        return meta

    def _bump(self, name: str, source: str) -> None:
        self._rv += 1
        self._nodes[name]["metadata"]["resourceVersion"] = str(self._rv)
        self._snapshot(name, source)

    def _snapshot(self, name: str, source: str) -> None:
        meta = self._nodes[name]["metadata"]
        self._history[name].append(NodeSnapshot(
            time=time.time(), source=source, resource_version=meta["resourceVersion"],
            labels=dict(meta.get("labels") or {}), annotations=dict(meta.get("annotations") or {}),
        ))

    # Request-side operations, called by the handler with the lock taken.
    def _get_node(self, name: str) -> dict[str, Any] | None:
        node = self._nodes.get(name)
        return copy.deepcopy(node) if node is not None else None

    def _replace_node(self, name: str, new: Any, identity: str, method: str,
                      precondition_rv: str | None) -> dict[str, Any]:
        """Validate and store a patched/put Node, like the api-server's update path."""
        old = self._nodes[name]
        if precondition_rv is not None and precondition_rv != old["metadata"]["resourceVersion"]:
            raise PatchError(409, "Conflict",
                             f'Operation cannot be fulfilled on nodes "{name}": the object has been '
                             "modified; please apply your changes to the latest version and try again")
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise PatchError(422, "Invalid", f'Node "{name}" is invalid: metadata: Required value')
        meta = new["metadata"]
        if meta.get("name", name) != name:
            raise PatchError(400, "BadRequest", f"the name of the object ({meta.get('name')}) "
                             f"does not match the name on the URL ({name})")
        for field_name in ("labels", "annotations"):
            m = meta.get(field_name)
            if m is None:
                meta[field_name] = {}
                continue
            if not isinstance(m, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
                raise PatchError(400, "BadRequest",
                                 f"unable to decode metadata.{field_name}: values must be strings")
        # Immutable/server-owned fields keep their stored values.
        for keep in ("name", "uid", "selfLink", "creationTimestamp"):
            meta[keep] = old["metadata"][keep]
        new["kind"], new["apiVersion"] = "Node", "v1"
        self._nodes[name] = new
        self._bump(name, f"request:{method} by {identity}")
        return copy.deepcopy(new)


# -- what kubectl needs: discovery, label selectors, server-side printing -------------------------

def _api_versions(url: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": url.split("//", 1)[1]}]}


def _core_resources(url: str) -> dict[str, Any]:
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "nodes", "singularName": "", "namespaced": False, "kind": "Node",
         "verbs": ["get", "list", "patch", "update"], "shortNames": ["no"]},
        {"name": "configmaps", "singularName": "", "namespaced": True, "kind": "ConfigMap",
         "verbs": ["get"], "shortNames": ["cm"]},
    ]}


#: Legacy discovery, as kube-apiserver answers a client that does not ask for the aggregated kind.
DISCOVERY = {
    "/api": _api_versions,
    "/apis": lambda url: {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": _core_resources,
}

#: A label key: an optional DNS-1123 subdomain prefix and a name, as apimachinery validates it.
_LABEL_KEY = re.compile(r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
#: The prefixes a node may not set itself, but for the few NodeRestriction allows.
_NODE_RESTRICTED = ("kubernetes.io/", "k8s.io/")
_NODE_ALLOWED = ("kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os", "beta.kubernetes.io/arch",
                 "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
                 "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
                 "topology.kubernetes.io/region", "topology.kubernetes.io/zone")


def _restricted(key: str) -> bool:
    prefix = key.rpartition("/")[0]
    return bool(prefix) and any(prefix + "/" == p or prefix.endswith("." + p.rstrip("/")) for p in _NODE_RESTRICTED)


def restricted_labels(old: dict[str, Any], new: Any, identity: str) -> None:
    """What the NodeRestriction admission plugin refuses a node: changing a
    label under kubernetes.io or k8s.io beyond the ones kubelet sets; and,
    as validation does for anyone, a label whose key or value is invalid."""
    before = old["metadata"].get("labels") or {}
    after = (new.get("metadata") or {}).get("labels") or {} if isinstance(new, dict) else {}
    if not isinstance(after, dict):
        return  # the update path refuses it with its own message
    for key in set(before) | set(after):
        if before.get(key) == after.get(key):
            continue
        if _restricted(key) and key not in _NODE_ALLOWED:
            raise PatchError(403, "Forbidden", f'nodes "{old["metadata"]["name"]}" is forbidden: is not allowed to '
                             f"modify labels: {key}")
        value = after.get(key)
        if not _LABEL_KEY.fullmatch(key) or (isinstance(value, str) and (
                len(value) > 63 or not _LABEL_VALUE.fullmatch(value))):
            raise PatchError(422, "Invalid", f'Node "{old["metadata"]["name"]}" is invalid: metadata.labels: '
                             f'Invalid value: "{value}": must be 63 characters or less and be a valid label value')


def parse_selector(text: str) -> list[tuple[str, str, str | None]]:
    """An equality-based label selector (``k=v``, ``k==v``, ``k!=v``, ``k``,
    ``!k``, comma-separated) as (key, operator, value) terms."""
    terms: list[tuple[str, str, str | None]] = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        for op in ("!=", "==", "="):
            key, found, value = raw.partition(op)
            if found:
                terms.append((key.strip(), "!=" if op == "!=" else "=", value.strip()))
                break
        else:
            terms.append((raw[1:], "!", None) if raw.startswith("!") else (raw, "exists", None))
        if not _LABEL_KEY.fullmatch(terms[-1][0]) or " " in raw:
            raise PatchError(400, "BadRequest", f"unable to parse requirement: {raw!r}: only equality-based "
                             "selectors are served here")
    return terms


def matches(terms: Sequence[tuple[str, str, str | None]], labels: dict[str, str]) -> bool:
    for key, op, value in terms:
        if (op == "=" and labels.get(key) != value) or (op == "!=" and labels.get(key) == value) or \
                (op == "exists" and key not in labels) or (op == "!" and key in labels):
            return False
    return True


def node_table(items: Sequence[dict[str, Any]], rv: str) -> dict[str, Any]:
    """The ``meta.k8s.io/v1`` Table kube-apiserver prints nodes as, with
    each row's metadata (kubectl reads ``-L`` columns from it)."""
    columns = [("Name", "name", "Name must be unique within a namespace."),
               ("Status", "", "The status of the node"), ("Roles", "", "The roles of the node"),
               ("Age", "", "CreationTimestamp"), ("Version", "", "Kubelet Version reported by the node.")]
    rows = []
    for node in items:
        meta = node["metadata"]
        age = max(0, int(time.time() - calendar.timegm(time.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))))
        rows.append({"cells": [meta["name"], "Ready", "<none>", f"{age}s",
                               node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")],
                     "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": [{"name": n, "type": "string", "format": f, "description": d, "priority": 0}
                                  for n, f, d in columns],
            "rows": rows}


def _common_name(subject: object) -> str:
    """The CN out of ``SSLSocket.getpeercert()["subject"]`` (a tuple of RDN tuples)."""
    if isinstance(subject, tuple):
        for rdn in subject:
            for attr in rdn if isinstance(rdn, tuple) else ():
                if isinstance(attr, tuple) and len(attr) == 2 and attr[0] == "commonName":
                    return str(attr[1])
    return ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _ApiHTTPServer(HarnessHTTPServer):
    def __init__(self, api: ApiServer, ctx: ssl.SSLContext) -> None:
        self.api = api
        super().__init__(_ApiHandler, ctx, api.log, "test-apiserver")


_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json",
                "application/json-patch+json")


class _ApiHandler(LoggingHandler):
    server: _ApiHTTPServer

    # -- plumbing ----------------------------------------------------------------
    def _json(self, status: int, obj: Any) -> None:
        self.send_bytes(status, json.dumps(obj).encode(), "application/json")

    def _status(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        self._json(code, status_object(code, reason, message, details))

    def _authenticate(self) -> str | None:
        """The user name, or None (401 already sent)."""
        conn = self.connection
        cert = conn.getpeercert() if isinstance(conn, ssl.SSLSocket) else None
        if cert:
            return _common_name(cert.get("subject", ()))
        auth = self.headers.get("Authorization", "")
        token = self.server.api.token
        if auth.startswith("Bearer ") and token and auth[len("Bearer "):].strip() == token:
            return "token-user"
        if self.server.api.anonymous_version and self._route()[0] == "/version" and not auth:
            return "system:anonymous"
        self._status(401, "Unauthorized", "Unauthorized")
        return None

    def _route(self) -> tuple[str, dict[str, list[str]]]:
        split = urllib.parse.urlsplit(self.path)
        return urllib.parse.unquote(split.path).rstrip("/") or "/", urllib.parse.parse_qs(split.query)

    def _handle(self) -> None:
        api = self.server.api
        if self.command in ("PATCH", "PUT", "POST"):
            self.read_body()
        if self.apply_fault(api.faults):
            return
        identity = self._authenticate()
        if identity is None:
            return
        self.identity = identity
        path, query = self._route()
        parts = path.strip("/").split("/")
        if path == "/version":
            if self.command not in ("GET", "HEAD"):
                return self._status(405, "MethodNotAllowed", "the server does not allow this method")
            with api._lock:
                return self._json(200, dict(api._version))
        if path in ("/healthz", "/readyz", "/livez"):
            return self.send_bytes(200, b"ok", "text/plain; charset=utf-8")
        if path in DISCOVERY and self.command in ("GET", "HEAD"):
            return self._json(200, DISCOVERY[path](self.server.api.url))
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "configmaps":
            return self._configmap(parts[3], parts[5])
        if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
            return self._node(parts[3])
        if parts == ["api", "v1", "nodes"] and self.command == "GET":
            return self._node_list(query)
        self._status(404, "NotFound", "the server could not find the requested resource")

    do_GET = do_HEAD = do_PATCH = do_PUT = do_POST = do_DELETE = _handle

    # -- resources ---------------------------------------------------------------
    def _forbidden(self, verb: str, resource: str, name: str, namespace: str | None = None) -> None:
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        self._status(403, "Forbidden",
                     f'{resource} "{name}" is forbidden: User "{self.identity}" cannot {verb} '
                     f"{resource} {scope}",
                     {"name": name, "kind": resource})

    def _configmap(self, namespace: str, name: str) -> None:
        if self.command != "GET":
            return self._forbidden(self.command.lower(), "configmaps", name, namespace)
        api = self.server.api
        with api._lock:
            cm = copy.deepcopy(api._configmaps.get((namespace, name)))
        if cm is None:
            return self._status(404, "NotFound", f'configmaps "{name}" not found',
                                {"name": name, "kind": "configmaps"})
        self._json(200, cm)

    def _node_list(self, query: dict[str, list[str]]) -> None:
        api = self.server.api
        wanted: str | None = None
        for sel in query.get("fieldSelector", []):
            for term in sel.split(","):
                key, _, value = term.partition("=")
                if key == "metadata.name":
                    wanted = value.lstrip("=")
        try:
            selector = [parse_selector(text) for text in query.get("labelSelector", [])]
        except PatchError as e:
            return self._status(e.code, e.reason, str(e))
        with api._lock:
            items = [copy.deepcopy(n) for k, n in sorted(api._nodes.items())
                     if (wanted is None or k == wanted)
                     and all(matches(terms, n["metadata"].get("labels") or {}) for terms in selector)]
            rv = str(api._rv)
        if "as=Table" in self.headers.get("Accept", ""):  # what kubectl get asks for: the server prints
            return self._json(200, node_table(items, rv))
        self._json(200, {"kind": "NodeList", "apiVersion": "v1",
                         "metadata": {"selfLink": "/api/v1/nodes", "resourceVersion": rv},
                         "items": items})

    def _node(self, name: str) -> None:
        api = self.server.api
        identity = self.identity or ""
        if self.command in ("GET", "HEAD"):
            with api._lock:
                node = api._get_node(name)
            if node is None:
                return self._status(404, "NotFound", f'nodes "{name}" not found',
                                    {"name": name, "kind": "nodes"})
            return self._json(200, node)
        if self.command not in ("PATCH", "PUT"):
            return self._forbidden(self.command.lower(), "nodes", name)
        # NodeRestriction: a node identity may modify only its own Node.
        if identity.startswith("system:node:") and identity != f"system:node:{name}":
            return self._forbidden(self.command.lower(), "nodes", name)
        try:
            body = json.loads(self.request_body or b"null")
        except ValueError as e:
            return self._status(400, "BadRequest", f"the body of the request was in an unknown format: {e}")
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        with api._lock:
            current = api._nodes.get(name)
            if current is None:
                return self._status(404, "NotFound", f'nodes "{name}" not found',
                                    {"name": name, "kind": "nodes"})
            try:
                if self.command == "PUT":
                    if ctype not in ("application/json", ""):
                        raise PatchError(415, "UnsupportedMediaType",
                                         "the body of the request was in an unknown format - "
                                         "accepted media types include: application/json")
                    rv = body.get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
                    if not rv:
                        raise PatchError(422, "Invalid",
                                         f'Node "{name}" is invalid: metadata.resourceVersion: '
                                         "Invalid value: 0x0: must be specified for an update")
                    new = body
                elif ctype == "application/json-patch+json":
                    new, rv = json_patch(current, body), None
                elif ctype in _PATCH_TYPES:
                    if not isinstance(body, dict):
                        raise PatchError(400, "BadRequest", "merge patch must be a JSON object")
                    meta = body.get("metadata")
                    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
                    new = merge_patch(current, body)
                else:
                    raise PatchError(415, "UnsupportedMediaType",
                                     "the body of the request was in an unknown format - "
                                     f"accepted media types include: {', '.join(_PATCH_TYPES)}")
                if identity.startswith("system:node:"):
                    restricted_labels(current, new, identity)
                result = api._replace_node(name, new, identity, self.command,
                                           str(rv) if rv is not None else None)
            except PatchError as e:
                return self._status(e.code, e.reason, str(e))
        self._json(200, result)
