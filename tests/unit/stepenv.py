"""A node under a temporary root for the step tests: NodePaths, a boot id,
a vendor profile, os-release, a configuration whose paths all point into
the root, flow state with a fake clock, and step contexts taken from the
real flow table.

Earlier steps' records are seeded through the real FlowState
(``env.begin(flow, record, ...)``), so a step under test reads exactly what
its predecessors would have written.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from torcx_tectonic import flows
from torcx_tectonic.config import Config
from torcx_tectonic.paths import NodePaths
from torcx_tectonic.state import FlowState, ManifestCache, Record
from torcx_tectonic.steps.context import Context

from .helpers import Keys, RoutedServer, make_config, sha512

BOARD = "amd64-usr"
CURRENT_OS = "1632.3.0"
NEXT_OS = "1688.5.3"
KUBE = "v1.8.4+coreos.0"
#: What the vendor profile of the running OS selects.
VENDOR_DOCKER = "com.coreos.cl"
ADDON = b"docker 17.03 torcx tarball " * 200
ADDON_NAME = "docker:17.03.torcx.tgz"
MAPPINGS = 'kind: VersionManifestV1\nversions:\n  k8s:\n    "1.8":\n      docker: ["17.03", "1.12"]\n'
INSTALLER_ENV = "# from the installer\nKUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.8.0_coreos.0\n"
MANIFEST_PATH = "/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json"


class FakeClock:
    """A wall clock that moves one second each time it is read."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class StepEnv:
    """One node under ``root``; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = NodePaths(root)
        self.clock = FakeClock()
        self.settings: dict[str, str] = {}
        self.set_os(CURRENT_OS)
        self.paths.vendor_profiles.mkdir(parents=True)
        (self.paths.vendor_profiles / "vendor.json").write_text(json.dumps(
            {"kind": "profile-manifest-v0", "value": {"images": [{"name": "docker", "reference": VENDOR_DOCKER}]}}))

    # the node ------------------------------------------------------------------------------------
    def refused_api_server(self) -> str:
        """A kubeconfig naming an api-server whose port refuses connections
        (closed once the probe that found it free is); the server's URL."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            server = f"https://127.0.0.1:{probe.getsockname()[1]}"
        self.write(self.config.kubernetes.kubeconfig, "apiVersion: v1\nkind: Config\n"
                   f"clusters: [{{name: c, cluster: {{server: \"{server}\"}}}}]\n"
                   "users: [{name: u, user: {token: secret}}]\n"
                   "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n")
        return server

    def at(self, node_path: str) -> Path:
        """``node_path`` (absolute, as on a node) under the root."""
        return self.root / node_path.lstrip("/")

    def reboot(self) -> None:
        """A new boot: /run is empty again."""
        shutil.rmtree(self.paths.state_dir, ignore_errors=True)

    def set_os(self, version: str, board: str = BOARD) -> None:
        self.paths.os_release.parent.mkdir(parents=True, exist_ok=True)
        self.paths.os_release.write_text(f'NAME="Container Linux by CoreOS"\nID=coreos\nVERSION_ID={version}\n'
                                         f'COREOS_BOARD="{board}"\n')

    def booted(self, reference: str) -> None:
        """torcx booted ``docker:<reference>`` (its metadata and applied profile)."""
        applied = self.at("/run/torcx/profile.json")
        applied.parent.mkdir(parents=True, exist_ok=True)
        applied.write_text(json.dumps({"kind": "profile-manifest-v0",
                                       "value": {"images": [{"name": "docker", "reference": reference}]}}))
        self.paths.torcx_metadata.parent.mkdir(parents=True, exist_ok=True)
        self.paths.torcx_metadata.write_text(f'TORCX_UPPER_PROFILE="tectonic"\nTORCX_PROFILE_PATH="{applied}"\n')

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the root, by content (symlinks by target)."""
        out = {}
        for path in sorted(self.root.rglob("*")):
            rel = str(path.relative_to(self.root))
            if path.is_symlink():
                out[rel] = b"-> " + str(path.readlink()).encode()
            elif path.is_file():
                out[rel] = path.read_bytes()
        return out

    # configuration ---------------------------------------------------------------------------------
    def configure(self, settings: Mapping[str, str]) -> None:
        """Override ``{"section.key": "value"}`` settings for the contexts made after."""
        self.settings.update(settings)

    def values(self) -> dict[str, str]:
        """Every setting the tests give, ``{"section.key": "value"}``: the
        node's paths under the root, no metrics, quick network failures."""
        defaults = {
            "kubernetes.kubeconfig": str(self.at("/etc/kubernetes/kubeconfig")),
            "kubernetes.kubelet_env": str(self.at("/etc/kubernetes/kubelet.env")),
            "kubernetes.installer_kubelet_env": str(self.at("/etc/kubernetes/installer/kubelet.env")),
            "kubernetes.runtime_mappings": str(self.at("/etc/kubernetes/installer/runtime-mappings.yaml")),
            "torcx.keyring": str(self.at("/etc/torcx-tectonic/keyring.gpg")),
            "torcx.manifest_url": "http://127.0.0.1:9/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json",
            "metrics.textfile_dir": "",
            "network.retries": "0",
            "network.connect_timeout": "2",
            "network.read_timeout": "5",
        }
        return {**defaults, **self.settings}

    @property
    def config(self) -> Config:
        return make_config(self.values())

    def config_file(self, extra: str = "") -> Path:
        """The same configuration as an INI file (for the entry point, which
        loads it), followed by ``extra`` lines."""
        sections: dict[str, list[str]] = {}
        for name, value in {"kubernetes.node_name": "node-1", **self.values()}.items():
            section, key = name.split(".")
            sections.setdefault(section, []).append(f"{key} = {value}")
        text = "".join(f"[{section}]\n" + "".join(f"{line}\n" for line in lines)
                       for section, lines in sections.items())
        return self.write(self.root.parent / "config" / "torcx-tectonic.conf", text + extra)

    @property
    def kubelet_env(self) -> Path:
        return self.config.kubernetes.kubelet_env

    @property
    def installer_env(self) -> Path:
        return self.config.kubernetes.installer_kubelet_env

    def write(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    # flows, runs and records -------------------------------------------------------------------------
    def state(self, flow: str) -> FlowState:
        return FlowState(self.paths, flow, self.clock)

    def begin(self, flow: str, *records: Record) -> FlowState:
        """Begin a run of ``flow`` (as its first step does) and seed records of earlier steps."""
        found = next(f for f in flows.all_flows(self.config) if f.name == flow)
        state = self.state(flow)
        state.begin(found.steps[0].name)
        for record in records:
            state.save(record)
        return state

    def context(self, flow: str, step: str) -> Context:
        """The context the runner gives ``flow``/``step`` (from the real flow table)."""
        config = self.config
        found = flows.find_step(config, flow, step)
        assert found is not None, f"no step {flow}/{step} in the flow table"
        state = self.state(flow)
        state.step = step  # as the runner's, once the step began or joined the run
        return Context(config, self.paths, state, found[0], found[1])

    def cache_manifest(self, os_version: str, raw: bytes, board: str = BOARD) -> str:
        """Put a manifest into the verified cache, as the runtime step does; its sha256."""
        return ManifestCache(self.paths.cache_dir).put(board, os_version, raw)


# manifests and the bucket -----------------------------------------------------------------------------

def manifest(versions: Sequence[tuple[str, bytes, Sequence[Mapping[str, str]]]], name: str = "docker") -> bytes:
    """A torcx-package-list-v0 with one package: (version, addon bytes it hashes, locations)."""
    return json.dumps({"kind": "torcx-package-list-v0", "value": {"packages": [{
        "name": name, "defaultVersion": versions[0][0] if versions else None,
        "versions": [{"version": version, "hash": "sha512-" + sha512(data), "sourcePackage": f"app-torcx/{name}",
                      "locations": [dict(loc) for loc in locations]} for version, data, locations in versions]}]}},
        indent=1).encode()


def addon_manifest(*locations: Mapping[str, str], data: bytes = ADDON, version: str = "17.03") -> bytes:
    return manifest([(version, data, locations)])


def use_bucket(env: StepEnv, server: RoutedServer, keys: Keys | None = None) -> None:
    """Point the configuration at the local bucket: signed manifests with
    ``keys`` (its trusted keyring), else verification off."""
    env.configure({"torcx.manifest_url": server.base + MANIFEST_PATH})
    if keys is None:
        env.configure({"torcx.verify_signatures": "no"})
    else:
        env.configure({"torcx.verify_signatures": "yes", "torcx.keyring": str(keys.keyring)})


def serve_manifest(server: RoutedServer, os_version: str, raw: bytes, keys: Keys | None = None,
                   board: str = BOARD) -> str:
    """Serve ``raw`` (and its signature with ``keys``) as the manifest of ``os_version``; its path."""
    path = MANIFEST_PATH.replace("{{.Board}}", board).replace("{{.OSVersion}}", os_version)
    server.routes[path] = (200, raw)
    if keys is not None:
        server.routes[path + ".asc"] = (200, keys.sign(raw))
    return path


# the api-server and the clock, as the annotation step sees them ---------------------------------------

class FakeKube:
    """Stands in for kube.KubeClient (the api-server is TLS-only and has its
    own tests): the node gets the before-reboot label after ``label_after``
    looks (never with None); annotations are recorded with the labels the
    node carried at that moment."""

    def __init__(self, label: str, label_after: int | None = 0) -> None:
        self.label, self.label_after, self.looks = label, label_after, 0
        self.annotations: list[tuple[str, dict[str, str]]] = []
        self.labels_when_annotated: list[dict[str, str]] = []

    def __enter__(self) -> FakeKube:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _labels(self) -> dict[str, str]:
        return {self.label: "true"} if self.label_after is not None and self.looks > self.label_after else {}

    def node(self, name: str) -> dict[str, object]:
        self.looks += 1
        return {"metadata": {"name": name, "labels": self._labels()}}

    def annotate_node(self, name: str, annotations: Mapping[str, str]) -> dict[str, object]:
        self.annotations.append((name, dict(annotations)))
        self.labels_when_annotated.append(self._labels())
        return {}
