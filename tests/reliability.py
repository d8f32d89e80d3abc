"""The fault campaign's cases: the kill points, the faults and the races.

This table is the single list the campaign's tests run. A kill point says
where a step is killed (its N-th call of a system call whose strace line
matches a pattern) and what the node holds right after (the campaign checks
that it finds exactly that).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
CURRENT, NEXT = "1632.3.0", "1688.5.3"


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL to a step at the entry of the ``occurrence``-th call of
    ``syscall`` whose strace line matches ``pattern`` (or, for ``stall``,
    while the bucket holds a download matching ``pattern`` mid-body)."""

    flow: str
    step: str
    syscall: str
    pattern: str
    what: str
    #: what the node holds right after the kill: "as before", "as after", or
    #: which of the files the step changes are already as after
    outcome: str
    occurrence: int = 1

    @property
    def id(self) -> str:
        words = re.sub(r"[^a-z0-9]+", "-", self.what.lower()).strip("-")
        return f"{self.flow}.{self.step}.{self.syscall}.{words}"[:90]


def _path(path: str) -> str:
    return re.escape(path)


def kill(flow: str, step: str, syscall: str, path: str, what: str, outcome: str, occurrence: int = 1,
         raw: bool = False) -> KillPoint:
    """A kill point at the call of ``syscall`` on ``path`` (a path prefix;
    temporary names are random, so a prefix such as ``/etc/torcx/.next-profile.``
    names them)."""
    return KillPoint(flow, step, syscall, path if raw else f"{syscall}\\((?:[0-9]+<)?\"?{_path(path)}", what,
                     outcome, occurrence)


STORE = "/var/lib/torcx/store"
RUNS = "/var/lib/torcx-tectonic/runs"
STATE = "/run/torcx-tectonic"
METRICS = "/var/lib/node_exporter/textfile_collector"
CACHE = "/var/cache/torcx-tectonic/manifests/amd64-usr"
MARKER = "/var/lib/torcx-tectonic/docker-reset-needed"
ADDON_1703 = "docker:17.03.torcx.tgz"
ADDON_1706 = "docker:17.06.torcx.tgz"

NEXT_ADDON = f"store {NEXT}/{ADDON_1703}"
BOTH_ADDONS = f"store {CURRENT}/{ADDON_1703}, store {NEXT}/{ADDON_1703}"
OLD_ADDONS = "store 1520.3.0/docker:1.12.torcx.tgz, store 1600.0.0/docker:1.12.torcx.tgz"
OLD_DOCKER = ("docker/containers/c1/config.json, docker/image/overlay2/repositories.json, "
              "docker/volumes/metadata.db")
ADDON_1706_HERE = f"store {CURRENT}/{ADDON_1706}"

KILL_POINTS: tuple[KillPoint, ...] = (
    # bootstrap: a fresh node, an OS update to NEXT applied by the first step, docker 17.03 for both OS versions
    kill("bootstrap", "os-update", "rename", f"{RUNS}/.bootstrap.json.", "beginning the run record", "as before"),
    kill("bootstrap", "os-update", "rename", f"{STATE}/bootstrap/.run.", "marking the run as this boot's",
         "as before"),
    kill("bootstrap", "os-update", "write", f"{STATE}/bootstrap/.os-versions.json.", "writing the OS versions record",
         "as before"),
    kill("bootstrap", "kubelet-version", "rename", f"{STATE}/bootstrap/.kubernetes-version.json.",
         "renaming the Kubernetes version record", "as before"),
    kill("bootstrap", "docker-version", "rename", f"{CACHE}/.{NEXT}.json.", "renaming the verified manifest into the "
         "cache", "as before"),
    kill("bootstrap", "docker-version", "rename", f"{STATE}/bootstrap/.runtime-choice.json.",
         "renaming the runtime choice record", f"after: cached manifest {CURRENT}.json, cached manifest {NEXT}.json"),
    kill("bootstrap", "addons", "mkdir", f"{STORE}/{NEXT}", "creating the versioned store of the next OS",
         "as before"),
    kill("bootstrap", "addons", "fsync", f"{STORE}>", "syncing the new store's entry into the store directory",
         "as before"),
    kill("bootstrap", "addons", "write", f"{STORE}/{NEXT}/.{ADDON_1703}.", "writing the downloaded addon",
         "as before"),
    kill("bootstrap", "addons", "rename", f"{STORE}/{NEXT}/.{ADDON_1703}.", "renaming the addon into its store",
         "as before"),
    kill("bootstrap", "addons", "fsync", f"{STORE}/{NEXT}>", "syncing the next OS store after the rename",
         f"after: {NEXT_ADDON}"),
    kill("bootstrap", "addons", "link", f"{STORE}/{NEXT}/{ADDON_1703}", "hard-linking the addon for the running OS",
         f"after: {NEXT_ADDON}"),
    kill("bootstrap", "addons", "rename", f"{STORE}/{CURRENT}/.{ADDON_1703}.", "renaming the link into its store",
         f"after: {NEXT_ADDON}"),
    kill("bootstrap", "addons", "fsync", f"{STORE}/{CURRENT}>", "syncing the running OS store after the link",
         f"after: {BOTH_ADDONS}"),
    kill("bootstrap", "addons", "write", "/var/lib/torcx-tectonic/.docker-reset-needed.",
         "writing the Docker reset marker", f"after: {BOTH_ADDONS}"),
    kill("bootstrap", "addons", "rename", "/var/lib/torcx-tectonic/.docker-reset-needed.",
         "renaming the Docker reset marker", f"after: {BOTH_ADDONS}"),
    kill("bootstrap", "addons", "write", "/etc/torcx/profiles/.tectonic.json.", "writing the profile",
         f"after: docker-reset-needed, {BOTH_ADDONS}"),
    kill("bootstrap", "addons", "rename", "/etc/torcx/profiles/.tectonic.json.", "renaming the profile",
         f"after: docker-reset-needed, {BOTH_ADDONS}"),
    kill("bootstrap", "addons", "write", "/etc/torcx/.next-profile.", "writing next-profile",
         f"after: profile tectonic.json, docker-reset-needed, {BOTH_ADDONS}"),
    kill("bootstrap", "addons", "rename", "/etc/torcx/.next-profile.", "renaming next-profile",
         f"after: profile tectonic.json, docker-reset-needed, {BOTH_ADDONS}"),
    kill("bootstrap", "addons", "fsync", "/etc/torcx>", "syncing /etc/torcx after next-profile",
         f"after: next-profile, profile tectonic.json, docker-reset-needed, {BOTH_ADDONS}", occurrence=2),
    kill("bootstrap", "addons", "rename", f"{RUNS}/.bootstrap.json.", "renaming the run record: step ok",
         "as after", occurrence=3),
    kill("bootstrap", "addons", "rename", f"{METRICS}/.torcx_tectonic.prom.", "renaming the metrics", "as after"),
    kill("bootstrap", "kubelet-env", "write", "/etc/kubernetes/.kubelet.env.", "writing kubelet.env",
         "after: enabled kubelet.service"),
    kill("bootstrap", "kubelet-env", "rename", "/etc/kubernetes/.kubelet.env.", "renaming kubelet.env",
         "after: enabled kubelet.service"),
    kill("bootstrap", "kubelet-env", "fsync", "/etc/kubernetes>", "syncing /etc/kubernetes after kubelet.env",
         "after: kubelet.env, enabled kubelet.service"),
    kill("bootstrap", "kubelet-env", "rename", f"{STATE}/bootstrap/.kubelet-env.json.",
         "renaming the kubelet.env record", "after: kubelet.env, enabled kubelet.service"),
    kill("bootstrap", "finish", "write", f"{STATE}/bootstrap/.bootstrap-finish.json.",
         "writing the finish record (the kubelet is enabled and started)", "as before"),
    kill("bootstrap", "finish", "rename", f"{RUNS}/.bootstrap.json.", "renaming the run record: run ok", "as after",
         occurrence=2),
    # new OS: a bootstrapped node (17.03 for the running OS, two older versioned stores), update to NEXT applied
    kill("new-os", "os-version", "rename", f"{RUNS}/.new-os.json.", "beginning the run record", "as before"),
    kill("new-os", "addons", "write", f"{STORE}/{NEXT}/.{ADDON_1703}.", "writing the downloaded addon", "as before"),
    kill("new-os", "addons", "rename", f"{STORE}/{NEXT}/.{ADDON_1703}.", "renaming the addon into its store",
         "as before"),
    kill("new-os", "addons", "rename", f"{STATE}/new-os/.addons.json.", "renaming the addons record",
         f"after: {NEXT_ADDON}"),
    kill("new-os", "gc", "rename", f"{STORE}/1520.3.0", "moving the first old store aside", "as before"),
    kill("new-os", "gc", "rename", f"{STORE}/1600.0.0", "moving the second old store aside",
         "after: store 1520.3.0/docker:1.12.torcx.tgz"),
    kill("new-os", "gc", "fsync", f"{STORE}>", "syncing the store after moving them", f"after: {OLD_ADDONS}"),
    kill("new-os", "gc", "unlinkat", f"{STORE}/.gc-1520.3.0>", "deleting the first old store's addon",
         f"after: {OLD_ADDONS}"),
    kill("new-os", "gc", "rmdir", f"{STORE}/.gc-1520.3.0", "removing the first old store", f"after: {OLD_ADDONS}"),
    kill("new-os", "gc", "rename", f"{STATE}/new-os/.store-gc.json.", "renaming the GC record",
         f"after: {OLD_ADDONS}"),
    kill("new-os", "annotate", "rename", f"{STATE}/new-os/.annotation.json.",
         "renaming the annotation record (the node is annotated)", "after: api annotation"),
    # new kubelet: a bootstrapped node whose kubelet.env moves to Kubernetes 1.9 (docker 17.06), no OS update
    kill("new-kubelet", "kubelet-version", "rename", f"{RUNS}/.new-kubelet.json.", "beginning the run record",
         "as before"),
    kill("new-kubelet", "docker-version", "write", f"{CACHE}/.{CURRENT}.json.", "writing the cached manifest",
         "as before"),
    kill("new-kubelet", "addons", "write", f"{STORE}/{CURRENT}/.{ADDON_1706}.", "writing the downloaded addon",
         "as before"),
    kill("new-kubelet", "addons", "rename", f"{STORE}/{CURRENT}/.{ADDON_1706}.", "renaming the addon into its store",
         "as before"),
    kill("new-kubelet", "addons", "write", "/var/lib/torcx-tectonic/.docker-reset-needed.",
         "writing the Docker reset marker", f"after: {ADDON_1706_HERE}"),
    kill("new-kubelet", "addons", "rename", "/var/lib/torcx-tectonic/.docker-reset-needed.",
         "renaming the Docker reset marker", f"after: {ADDON_1706_HERE}"),
    kill("new-kubelet", "addons", "write", "/etc/torcx/profiles/.tectonic.json.", "writing the profile",
         f"after: docker-reset-needed, {ADDON_1706_HERE}"),
    kill("new-kubelet", "addons", "rename", "/etc/torcx/profiles/.tectonic.json.", "renaming the profile",
         f"after: docker-reset-needed, {ADDON_1706_HERE}"),
    kill("new-kubelet", "addons", "fsync", "/etc/torcx/profiles>", "syncing the profiles after the rename",
         f"after: profile tectonic.json, docker-reset-needed, {ADDON_1706_HERE}"),
    kill("new-kubelet", "addons", "rename", f"{RUNS}/.new-kubelet.json.", "renaming the run record: step ok",
         "as after", occurrence=3),
    # Docker reset: the marker says 17.03 -> 17.06, /var/lib/docker holds the old Docker's data
    kill("docker-reset", "data", "rename", "/var/lib/docker", "moving the data directory aside", "as before"),
    kill("docker-reset", "data", "fsync", "/var/lib>", "syncing /var/lib after moving it", f"after: {OLD_DOCKER}"),
    kill("docker-reset", "data", "unlinkat", "/var/lib/docker.torcx-tectonic-old/", "deleting the old data",
         f"after: {OLD_DOCKER}"),
    kill("docker-reset", "data", "rmdir", "/var/lib/docker.torcx-tectonic-old", "removing the old data directory",
         f"after: {OLD_DOCKER}"),
    kill("docker-reset", "data", "mkdir", "/var/lib/docker", "creating the empty data directory",
         f"after: {OLD_DOCKER}"),
    kill("docker-reset", "data", "unlink", MARKER, "removing the reset marker", f"after: {OLD_DOCKER}"),
    kill("docker-reset", "data", "rename", f"{STATE}/docker-reset/.docker-reset.json.",
         "renaming the reset record", f"after: {OLD_DOCKER}, docker-reset-needed"),
)

#: Kills that no system call marks: the step is blocked, reading a download the bucket holds mid-body.
STALL_KILLS: tuple[KillPoint, ...] = (
    KillPoint("bootstrap", "docker-version", "stall", "/manifests/", "while the manifest download stalls mid-body",
              "as before"),
    KillPoint("bootstrap", "addons", "stall", "/addons/", "while the addon download stalls mid-body", "as before"),
)

def bad_input_cases() -> int:
    """How many malformed and hostile inputs tests/unit/test_bad_input.py feeds the readers."""
    sys.path.insert(0, str(ROOT))
    from tests.unit.test_bad_input import CASES

    return len(CASES)
