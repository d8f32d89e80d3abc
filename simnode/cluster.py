"""A whole test cluster around one node: the piece tests and `make node` share.

It makes the PKI, the signing key, the HTTPS release bucket (with real
signed manifests and real addons), the api-server stand-in over TLS, and the
files an installer would have put on a Container Linux node (kubeconfig,
the installer's kubelet.env and runtime mappings, the keyring and a
configuration drop-in pointing at the stand-ins). Then it builds a
:class:`~simnode.node.Node` with the bundle installed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import flatcar
from .addons import make_sysext_image
from .apiserver import ApiServer
from .bucket import Bucket, Signer, publish_sysext
from .closing import Closing
from .node import Node
from .pki import Pki, make_pki

REPO = Path(__file__).resolve().parents[1]
BOARD = "amd64-usr"
NODE_NAME = "node-1"
KUBECONFIG = "/etc/kubernetes/kubeconfig"
KEYRING = "/etc/torcx-tectonic/keyring.gpg"
CA_BUNDLE = "/etc/torcx-tectonic/test-ca.pem"
TEST_DROPIN = "/etc/torcx-tectonic/conf.d/50-test.conf"
CLUO_PREFIX = "container-linux-update.v1.coreos.com"
ANNOTATION = f"{CLUO_PREFIX}/tectonic-torcx-pre-hook-ok"

#: Kubernetes minor → Docker versions, best first (the shape of the real mappings).
DEFAULT_MAPPINGS: dict[str, list[str]] = {"1.8": ["17.03", "1.12"], "1.9": ["17.06", "17.03"]}

#: Kubernetes minor → runtime versions of the system extension images, best first.
SYSEXT_MAPPINGS: dict[str, list[str]] = {"1.8": ["24.0.9", "20.10.24"], "1.9": ["25.0.3", "24.0.9"]}

#: Settings that keep failing tests quick; each test may override any of them.
FAST_SETTINGS: dict[str, dict[str, str]] = {
    "network": {"connect_timeout": "2", "read_timeout": "10", "retries": "1", "backoff_factor": "0.1"},
    # a failed new-OS run is tried again when the test starts it (or sets its own backoff)
    "units": {"retry_delay": "1", "retry_attempts": "2", "backoff_delay": "3600"},
    "bootstrap": {"os_update_timeout": "30", "os_update_attempts": "2"},
    "kubernetes": {"label_poll_max_interval": "1", "label_timeout": "60"},
}


def mappings_yaml(mappings: Mapping[str, Sequence[str]]) -> str:
    return yaml.safe_dump({"kind": "VersionManifestV1",
                           "versions": {"k8s": {k: {"docker": list(v)} for k, v in mappings.items()}}})


def ini(sections: Mapping[str, Mapping[str, str]]) -> str:
    out = []
    for section, values in sections.items():
        out.append(f"[{section}]")
        out.extend(f"{key} = {value}" for key, value in values.items())
        out.append("")
    return "\n".join(out)


def merge(*layers: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    merged: dict[str, dict[str, str]] = {}
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged


def build_bundle(dest: Path, **directories: str) -> Path:
    """`make install DESTDIR=dest`: the bundle exactly as a user installs it;
    ``directories`` are more of make's variables (``LIBEXECDIR="/opt/..."``)."""
    subprocess.run(["make", "-s", "-C", str(REPO), "install", f"DESTDIR={dest}", "PYTHON=/usr/bin/python3",
                    *(f"{name}={value}" for name, value in directories.items())],
                   check=True, capture_output=True, text=True)
    return dest


@dataclass
class Release:
    """One OS release in the bucket: the Docker versions its manifest lists,
    and which of them ship in that OS image's vendor store."""

    os_version: str
    docker_versions: Sequence[str]
    vendor: set[str] = field(default_factory=set)


class Cluster(Closing):
    """The stand-ins of one test, started and stopped together."""

    def __init__(self, workdir: Path, releases: Sequence[Release], *, kube_version: str = "v1.8.4+coreos.0",
                 mappings: Mapping[str, Sequence[str]] | None = None, configmap: bool = True,
                 apiserver_up: bool = True) -> None:
        self.workdir = workdir
        self.pki: Pki = make_pki(workdir / "pki", node_name=NODE_NAME)
        self.signer = Signer()
        self.bucket = Bucket(workdir / "bucket", self.signer)
        for release in releases:
            self.bucket.add_release(BOARD, release.os_version, list(release.docker_versions), None,
                                    vendor=set(release.vendor))
        self.mappings = dict(mappings if mappings is not None else DEFAULT_MAPPINGS)
        self.api = ApiServer(self.pki, git_version=kube_version,
                             runtime_mappings=mappings_yaml(self.mappings) if configmap else None)
        self.api.create_node(NODE_NAME, labels={}, annotations={})
        self.bucket.serve(tls=self.pki, url_host="localhost")
        if apiserver_up:
            self.api.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()
        with contextlib.suppress(Exception):
            self.bucket.close()
        self.signer.close()

    def node_files(self, settings: Mapping[str, Mapping[str, str]] | None = None, *,
                   installer_tag: str = "v1.8.4_coreos.0",
                   local_mappings: Mapping[str, Sequence[str]] | None = None,
                   node: str = NODE_NAME) -> dict[str, bytes | str]:
        """What an installer puts on a node, pointing at these stand-ins.
        Another ``node`` than the first joins the cluster: its Node object
        and its own kubelet certificate (``CN=system:node:<node>``)."""
        kubeconfig = self.workdir / f"kubeconfig-{node}"
        client = None
        if node != NODE_NAME:
            client = self.pki.issue_client(f"kubelet-{node}", f"system:node:{node}", ["system:nodes"])
            self.api.create_node(node, labels={}, annotations={})
        self.api.kubeconfig(kubeconfig, kind="certs", client=client)
        config = merge({
            "torcx": {"manifest_url": self.bucket.manifest_url_template, "keyring": KEYRING},
            "kubernetes": {"kubeconfig": KUBECONFIG, "node_name": node},
            "network": {"ca_bundle": CA_BUNDLE},
        }, FAST_SETTINGS, settings or {})
        return {
            TEST_DROPIN: ini(config),
            KEYRING: self.signer.export_public(armored=False),
            CA_BUNDLE: self.pki.ca_cert_pem,
            KUBECONFIG: kubeconfig.read_text(),
            "/etc/kubernetes/installer/kubelet.env": (
                "# written by the installer\nKUBELET_IMAGE_URL=quay.io/coreos/hyperkube\n"
                f"KUBELET_IMAGE_TAG={installer_tag}\nKUBELET_API_SERVERS=https://10.3.0.1:443\n"),
            "/etc/kubernetes/installer/runtime-mappings.yaml": mappings_yaml(
                local_mappings if local_mappings is not None else self.mappings),
        }

    def vendor_addons(self, os_version: str, versions: Sequence[str]) -> dict[str, Path]:
        """Addon files for a node's vendor store (the same bytes the manifest hashes)."""
        return {f"docker:{v}.torcx.tgz": self.bucket.addon_path(BOARD, os_version, v) for v in versions}

    def bootstrapped_files(self, os_version: str, docker: str = "17.03",
                           kube_tag: str = "v1.8.4_coreos.0") -> dict[str, bytes | str]:
        """The state a finished bootstrap leaves: kubelet.env, the addon in the
        running OS's versioned store, and the profile selecting it."""
        profile = ('{"kind": "profile-manifest-v0", "value": {"images": '
                   f'[{{"name": "docker", "reference": "{docker}"}}]}}}}\n')
        return {
            "/etc/kubernetes/kubelet.env": kubelet_env(kube_tag),
            f"/var/lib/torcx/store/{os_version}/docker:{docker}.torcx.tgz":
                self.bucket.addon_path(BOARD, os_version, docker).read_bytes(),
            "/etc/torcx/profiles/tectonic.json": profile,
            "/etc/torcx/next-profile": "tectonic\n",
        }

    def addon_downloads(self) -> list[str]:
        return [r.path for r in self.bucket.requests_for("/addons/", method="GET")]


def kubelet_env(kube_tag: str) -> str:
    """The kubelet.env a finished bootstrap writes."""
    return f"KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG={kube_tag}\n"


def enable(node: Node, unit: str, wanted_by: str = "multi-user.target",
           unit_dir: str = "/usr/lib/systemd/system") -> None:
    """Enable a shipped unit before boot, the way Ignition does (a .wants link in /etc)."""
    wants = node.root / "etc/systemd/system" / f"{wanted_by}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit).symlink_to(f"{unit_dir}/{unit}")


@contextlib.contextmanager
def cluster_node(bundle: Path, releases: Sequence[Release], *, os_version: str,
                 settings: Mapping[str, Mapping[str, str]] | None = None,
                 update_engine: Mapping[str, Any] | None = None, vendor: Sequence[str] = (),
                 files: Mapping[str, bytes | str] | None = None,
                 node_files: Mapping[str, Any] | None = None, **cluster_args: Any) -> Iterator[tuple[Cluster, Node]]:
    """A cluster and one node built against it (not booted yet)."""
    with tempfile.TemporaryDirectory(prefix="tt-cluster-") as tmp, \
            Cluster(Path(tmp), releases, **cluster_args) as cluster:
        all_files = {**cluster.node_files(settings, **(node_files or {})), **(files or {})}
        with Node(bundle=bundle, os_version=os_version, files=all_files,
                  vendor_addons=cluster.vendor_addons(os_version, vendor),
                  update_engine=update_engine or {"mode": "none"}) as node:
            yield cluster, node


@contextlib.contextmanager
def flatcar_node(bundle: Path, images: Mapping[str, str], *, os_version: str,
                 update_engine: Mapping[str, Any] | None = None,
                 settings: Mapping[str, Mapping[str, str]] | None = None,
                 files: Mapping[str, bytes | str] | None = None, kubelet_images: Mapping[str, str] | None = None,
                 kube_version: str = "v1.8.4+coreos.0",
                 mappings: Mapping[str, Sequence[str]] | None = None) -> Iterator[tuple[Cluster, Node]]:
    """A cluster and a Flatcar-like node with the sysext backend (not booted
    yet); the bucket serves ``images`` (version → extension-release text) as
    docker images, and ``kubelet_images`` as the bakery's kubernetes images
    (their /usr/bin/kubelet prints the version), real squashfs images with a
    signed SHA256SUMS. The api-server answers ``kube_version``, which the
    installer's kubelet.env names too."""
    with tempfile.TemporaryDirectory(prefix="tt-sysext-") as tmp, \
            Cluster(Path(tmp), [], mappings=mappings or SYSEXT_MAPPINGS, kube_version=kube_version) as cluster:
        built = [make_sysext_image(Path(tmp), "docker", v, text) for v, text in images.items()]
        built += [make_sysext_image(Path(tmp), "kubernetes", v, text, binary="kubelet")
                  for v, text in (kubelet_images or {}).items()]
        template = publish_sysext(cluster.bucket, built)
        config = merge({"runtime": {"backend": "sysext"},
                        "sysext": {"images_url": template, "keyring": KEYRING, "keep": "2"}}, settings or {})
        all_files = {**cluster.node_files(config, installer_tag=kube_version.replace("+", "_")),
                     **flatcar.node_files(), **(files or {})}
        with Node(bundle=bundle, os_version=os_version, os_flavor="flatcar", files=all_files,
                  nspawn_args=flatcar.nspawn_args(), update_engine=update_engine or {"mode": "none"}) as node:
            flatcar.enable_sysext(node)
            os.makedirs(node.host_path("/etc/extensions"), exist_ok=True)
            builtin = "/usr/share/flatcar/sysext/docker-flatcar.raw"  # Flatcar links its own image
            os.symlink(builtin, node.host_path("/etc/extensions/docker-flatcar.raw"))
            yield cluster, node
