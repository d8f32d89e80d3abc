"""The fault campaign's cases: the kill points, the faults and the races.

This table is the single list the campaign's tests run and that
``docs/reliability.md`` is made from (``python -m tests.reliability >
docs/reliability.md`` writes it; a unit test checks that the committed file
is what this module renders, and that every case names a test that exists).
A kill point says where a step is killed (its N-th call of a system call
whose strace line matches a pattern) and what the node holds right after
(the campaign checks that it finds exactly that); a fault or a race says
what its test finds and what else it asserts.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
CURRENT, NEXT = "1632.3.0", "1688.5.3"
#: The Flatcar releases of the sysext backend's node (without torcx: the runtime is a system extension).
FLATCAR_CURRENT, FLATCAR_NEXT = "3815.2.0", "3941.1.0"
#: The runtime backends: torcx addons (Container Linux), system extension images (Flatcar).
TORCX, SYSEXT = "torcx", "sysext"


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL to a step at the entry of the ``occurrence``-th call of
    ``syscall`` whose strace line matches ``pattern`` (or, for ``stall``,
    while the bucket holds a download matching ``pattern`` mid-body), on a
    node with the runtime ``backend``."""

    flow: str
    step: str
    syscall: str
    pattern: str
    what: str
    #: what the node holds right after the kill: "as before", "as after", or
    #: which of the files the step changes are already as after
    outcome: str
    occurrence: int = 1
    backend: str = TORCX

    @property
    def campaign(self) -> str:
        """The campaign it belongs to: its flow, on a node of its backend."""
        return self.flow if self.backend == TORCX else f"{self.flow} ({self.backend})"

    @property
    def id(self) -> str:
        words = re.sub(r"[^a-z0-9]+", "-", self.what.lower()).strip("-")
        backend = "" if self.backend == TORCX else f"{self.backend}."
        return f"{backend}{self.flow}.{self.step}.{self.syscall}.{words}"[:90]


@dataclass(frozen=True)
class Case:
    """A fault or a race: what happens, what the test finds, what else it
    asserts, and the test (``file::function``, with its parameter)."""

    kind: str  # "fault" or "race"
    area: str
    id: str
    name: str
    result: str
    checks: str
    test: str


def _path(path: str) -> str:
    return re.escape(path)


def kill(flow: str, step: str, syscall: str, path: str, what: str, outcome: str, occurrence: int = 1,
         raw: bool = False, backend: str = TORCX) -> KillPoint:
    """A kill point at the call of ``syscall`` on ``path`` (a path prefix;
    temporary names are random, so a prefix such as ``/etc/torcx/.next-profile.``
    names them)."""
    return KillPoint(flow, step, syscall, path if raw else f"{syscall}\\((?:[0-9]+<)?\"?{_path(path)}", what,
                     outcome, occurrence, backend)


STORE = "/var/lib/torcx/store"
RUNS = "/var/lib/torcx-tectonic/runs"
STATE = "/run/torcx-tectonic"
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

IMAGES = "/opt/extensions/docker"
EXTENSIONS = "/etc/extensions"
SYSEXT_CACHE = "/var/cache/torcx-tectonic/sysext"
#: Older images on the sysext node of the new-OS campaign, newest first: the GC keeps the first (``keep = 2``
#: with the linked one) and removes the others, each with its cached extension-release.
OLD_IMAGES = ("docker-20.10.24-x86-64.raw", "docker-19.03.15-x86-64.raw", "docker-18.09.9-x86-64.raw")
IMAGE_2409 = "docker-24.0.9-x86-64.raw"
IMAGE_2503 = "docker-25.0.3-x86-64.raw"
IMAGE_2409_HERE = f"image {IMAGE_2409}"
RELEASE_2409 = f"cached {IMAGE_2409}.release"


def sysext_kill(flow: str, step: str, syscall: str, path: str, what: str, outcome: str,
                occurrence: int = 1) -> KillPoint:
    """A kill point on a node with the sysext backend."""
    return kill(flow, step, syscall, path, what, outcome, occurrence, backend=SYSEXT)


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
         "renaming the runtime choice record",
         f"after: cached manifest {CURRENT}.json, cached manifest {NEXT}.json, record pin"),
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
    # Docker reset: the marker says 17.03 -> 17.06, torcx applied 17.06 at boot, /var/lib/docker holds 17.03's data
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
    # the sysext backend on a Flatcar-like node: docker is a system extension image, stored in /opt/extensions and
    # linked from /etc/extensions; bootstrap: a fresh node, an OS update applied by the first step, docker 24.0.9
    sysext_kill("bootstrap", "runtime-version", "write", f"{SYSEXT_CACHE}/.SHA256SUMS.",
                "writing the verified checksum list into the cache", "as before"),
    sysext_kill("bootstrap", "extension", "write", f"{IMAGES}/.{IMAGE_2409}.", "writing the downloaded image",
                "as before"),
    sysext_kill("bootstrap", "extension", "rename", f"{IMAGES}/.{IMAGE_2409}.", "renaming the image into its store",
                "as before"),
    sysext_kill("bootstrap", "extension", "rename", f"{SYSEXT_CACHE}/.{IMAGE_2409}.release.",
                "renaming the image's extension-release into the cache", f"after: {IMAGE_2409_HERE}"),
    sysext_kill("bootstrap", "extension", "write", "/var/lib/torcx-tectonic/.docker-reset-needed.",
                "writing the Docker reset marker", f"after: {IMAGE_2409_HERE}, {RELEASE_2409}"),
    sysext_kill("bootstrap", "extension", "rename", f"{EXTENSIONS}/.docker.raw.", "renaming the image's link",
                f"after: {IMAGE_2409_HERE}, {RELEASE_2409}, docker-reset-needed"),
    sysext_kill("bootstrap", "extension", "rename", f"{EXTENSIONS}/.docker-flatcar.raw.",
                "renaming the link that masks Flatcar's own image",
                f"after: link docker.raw, {IMAGE_2409_HERE}, {RELEASE_2409}, docker-reset-needed"),
    sysext_kill("bootstrap", "extension", "rename", f"{STATE}/bootstrap/.extension.json.",
                "renaming the extension record",
                f"after: link docker-flatcar.raw, link docker.raw, {IMAGE_2409_HERE}, {RELEASE_2409}, "
                "docker-reset-needed"),
    sysext_kill("bootstrap", "kubelet-env", "rename", "/etc/kubernetes/.kubelet.env.", "renaming kubelet.env",
                "after: enabled kubelet.service"),
    # new kubelet: a bootstrapped node (24.0.9 linked) whose kubelet.env moves to Kubernetes 1.9 (docker 25.0.3)
    sysext_kill("new-kubelet", "extension", "write", f"{IMAGES}/.{IMAGE_2503}.", "writing the downloaded image",
                "as before"),
    sysext_kill("new-kubelet", "extension", "rename", f"{IMAGES}/.{IMAGE_2503}.", "renaming the image into its store",
                "as before"),
    sysext_kill("new-kubelet", "extension", "rename", "/var/lib/torcx-tectonic/.docker-reset-needed.",
                "renaming the Docker reset marker", f"after: image {IMAGE_2503}, cached {IMAGE_2503}.release"),
    sysext_kill("new-kubelet", "extension", "rename", f"{EXTENSIONS}/.docker.raw.", "renaming the image's link",
                f"after: image {IMAGE_2503}, cached {IMAGE_2503}.release, docker-reset-needed"),
    # new OS: a bootstrapped node (24.0.9 linked, three older images), the update applied; keep = 2
    sysext_kill("new-os", "extension", "rename", f"{STATE}/new-os/.extension.json.", "renaming the extension record",
                f"after: {RELEASE_2409}"),
    sysext_kill("new-os", "gc", "unlink", f"{SYSEXT_CACHE}/{OLD_IMAGES[1]}.release",
                "deleting the cached extension-release of the first image beyond the kept", "as before"),
    sysext_kill("new-os", "gc", "unlink", f"{IMAGES}/{OLD_IMAGES[1]}", "deleting that image",
                f"after: cached {OLD_IMAGES[1]}.release"),
    sysext_kill("new-os", "gc", "unlink", f"{IMAGES}/{OLD_IMAGES[2]}", "deleting the second image beyond the kept",
                f"after: image {OLD_IMAGES[1]}, cached {OLD_IMAGES[2]}.release, cached {OLD_IMAGES[1]}.release"),
    sysext_kill("new-os", "gc", "rename", f"{STATE}/new-os/.store-gc.json.", "renaming the GC record",
                f"after: image {OLD_IMAGES[2]}, image {OLD_IMAGES[1]}, cached {OLD_IMAGES[2]}.release, "
                f"cached {OLD_IMAGES[1]}.release"),
)

#: Kills that no system call marks: the step is blocked, reading a download the bucket holds mid-body.
STALL_KILLS: tuple[KillPoint, ...] = (
    KillPoint("bootstrap", "docker-version", "stall", "/manifests/", "while the manifest download stalls mid-body",
              "as before"),
    KillPoint("bootstrap", "addons", "stall", "/addons/", "while the addon download stalls mid-body", "as before"),
    KillPoint("bootstrap", "extension", "stall", "/sysext/docker-", "while the image download stalls mid-body",
              "as before", backend=SYSEXT),
)

BUCKET = "release bucket"
API = "api-server"
ENGINE = "update_engine"
DISK = "disk"
#: What every fault test asserts besides its result (the failure names the cause).
FAULT_CHECKS = ("the error names the cause; nothing that was good is lost (addons, profiles, next-profile, "
                "kubelet.env as before); no temporary or partial file; retries bounded (request counts) with "
                "pauses between attempts; once the fault is gone, a run heals the node")


def fault(area: str, id: str, name: str, result: str, checks: str = FAULT_CHECKS) -> Case:
    return Case("fault", area, id, name, result, checks, f"tests/integration/test_faults.py::test_fault[{area}/{id}]")


FAULTS: tuple[Case, ...] = (
    # the new-kubelet flow on a bootstrapped node (17.03 selected) that needs docker 17.06
    fault(BUCKET, "manifest-404", "the manifest answers 404",
          "docker-version fails: `GET <manifest URL> answered 404`; 1 request per attempt (404 is not retried)"),
    fault(BUCKET, "manifest-500", "the manifest answers 500",
          "docker-version fails: `answered 500`; 2 requests per attempt (one retry with backoff)"),
    fault(BUCKET, "addon-503", "the addon answers 503",
          "addons fails: `answered 503`; 2 requests per attempt"),
    fault(BUCKET, "refused", "nothing listens where the bucket should be",
          "docker-version fails: `cannot reach <URL>: connection refused`"),
    fault(BUCKET, "manifest-stalls", "the manifest stalls mid-body",
          "docker-version fails after the read timeout: `reading <URL> broke off after 100 bytes: ... Read timed "
          "out`"),
    fault(BUCKET, "addon-stalls", "the addon stalls mid-body",
          "addons fails after the read timeout: `download from <URL> broke off ... Read timed out`; no partial addon"),
    fault(BUCKET, "manifest-truncated", "the manifest's body ends before its Content-Length",
          "docker-version fails: `reading <URL> broke off after 100 bytes`"),
    fault(BUCKET, "addon-truncated", "the addon's body ends before its Content-Length",
          "addons fails: `download from <URL> broke off`; no partial addon"),
    fault(BUCKET, "manifest-longer", "the manifest's body is longer than its Content-Length",
          "only the announced bytes are read: their signature does not verify (`bad signature`)"),
    fault(BUCKET, "addon-longer", "the addon's body is longer than its Content-Length",
          "only the announced bytes are read: `sha512 mismatch ... nothing was stored`"),
    fault(BUCKET, "redirect-loop", "the manifest redirects to itself",
          "docker-version fails: `Exceeded 5 redirects`; 6 requests per attempt"),
    fault(BUCKET, "wrong-hash", "the addon does not match the manifest's hash",
          "addons fails: `sha512 mismatch ... nothing was stored`, and the first failure says it rarely fixes itself "
          "and how long the step keeps trying"),
    fault(BUCKET, "missing-signature", "the manifest has no signature",
          "docker-version fails: `is not signed: <URL>.asc does not exist`"),
    fault(BUCKET, "bad-signature", "the manifest changed after it was signed",
          "docker-version fails: `signature verification against <keyring> failed: bad signature`"),
    fault(BUCKET, "strangers-signature", "the manifest is signed by a key not in the keyring",
          "docker-version fails: `signed by a key not in the keyring`; the first failure says it rarely fixes "
          "itself and how long the step keeps trying"),
    fault(BUCKET, "wrong-kind", "the manifest is of another kind",
          "docker-version fails: `kind is 'torcx-package-list-v1'; expected 'torcx-package-list-v0'`"),
    fault(BUCKET, "invalid-json", "the manifest is not JSON",
          "docker-version fails: `not valid JSON`"),
    fault(BUCKET, "huge-manifest", "the manifest is 9 MiB",
          "docker-version fails: `is larger than 8388608 bytes`, refused from its Content-Length before it is read"),
    fault(DISK, "store-full", "the store is on a full file system",
          "addons fails: `No space left on device: '<store>/docker:17.06.torcx.tgz'`; the 17.03 addon and the "
          "profile are intact"),
    # the new-OS flow on a bootstrapped node whose update operator already set the before-reboot label
    fault(API, "refused", "nothing listens where the api-server should be",
          "the ConfigMap falls back to the node-local mappings (`connection refused; using the node-local runtime "
          "mappings`); annotate fails: `cannot reach ... connection refused`; the next OS gets its addon"),
    fault(API, "unauthorized", "the api-server answers 401 (a wrong token)",
          "annotate fails: `answered 401: Unauthorized`; the ConfigMap falls back to the node-local mappings"),
    fault(API, "forbidden", "the api-server answers 403 (node_name names another node)",
          "annotate fails: `answered 403: nodes \"node-2\" is forbidden`"),
    fault(API, "wrong-ca", "the api-server's certificate is not from the kubeconfig's CA",
          "annotate fails: `TLS verification failed for <URL>: ... certificate verify failed`"),
    fault(API, "hostname-mismatch", "the kubeconfig names the api-server by a name its certificate lacks",
          "annotate fails: `TLS verification failed ... hostname 'api.wrong-name.test' doesn't match`"),
    fault(API, "slow", "the api-server answers slower than the read timeout",
          "annotate fails: `Read timed out`; 2 requests per attempt"),
    fault(API, "configmap-without-key", "the mappings ConfigMap lacks runtime-mappings.yaml",
          "the flow uses the node-local mappings and says so (`has no runtime-mappings.yaml`); it ends ok"),
    fault(API, "invalid-yaml", "the mappings ConfigMap is not valid YAML",
          "docker-version fails naming the ConfigMap; nothing is installed, collected or annotated"),
    fault(API, "conflict", "the node patch answers 409 once",
          "annotate's first attempt fails (`answered 409`), the second annotates; the run ends ok"),
    # update_engine
    fault(ENGINE, "not-on-the-bus", "update_engine is not on the bus (new OS)",
          "os-version fails: `update_engine GetStatus failed ... (is update-engine.service running on the system "
          "bus?)`"),
    fault(ENGINE, "error-event", "an update ends with an error event (bootstrap)",
          "each attempt fails (`update_engine reported an error event`), then the bootstrap goes on with the "
          "running OS and says so"),
    fault(ENGINE, "never-ends", "an update never ends (bootstrap)",
          "the attempt fails after os_update_timeout: `did not finish within 3s (last state "
          "UPDATE_STATUS_DOWNLOADING)`; the bootstrap goes on with the running OS"),
    fault(ENGINE, "empty-version", "UPDATED_NEED_REBOOT with an empty version (bootstrap)",
          "os-update fails: `reports its version as ''`; nothing is installed"),
)

POWER = "power loss"
POWER_CASES: tuple[Case, ...] = (
    Case("fault", POWER, "synced-renames", "every write path, traced: is a renamed file synced first?",
         "every file is fsynced before it is renamed into place and not written after; every rename, new "
         "directory and removal under /etc, /var and /opt is followed by an fsync of its directory",
         "the reference traces of every step the crash campaign kills cover addons (downloaded and linked), "
         "profiles, next-profile, kubelet.env, the reset marker, run records, the manifest cache, "
         "GC and the Docker reset; with the sysext backend, runtime images, their links, the mask of Flatcar's "
         "own image, the cached checksum list and the image GC",
         "tests/integration/test_crash.py::test_every_write_is_synced_before_its_rename_and_its_directory_after"),
    Case("fault", POWER, "reader", "a reader beside four new-kubelet runs",
         "no read of a profile, next-profile, run record, reset marker, metrics file or addon is empty or short",
         "the reader saw the profile change, and every run record the runs wrote",
         "tests/integration/test_power.py::test_a_reader_never_sees_an_empty_or_short_file"),
    Case("fault", POWER, "cut-after-kubelet-env", "power cut right after kubelet.env is renamed",
         "at the next boot no bootstrap step runs (kubelet.env exists) and the kubelet starts: it was enabled first",
         "no temporary file after the boot",
         "tests/integration/test_power.py::test_a_power_cut_right_after_kubelet_env_still_starts_the_kubelet"),
    Case("fault", POWER, "cut-before-addon-rename", "power cut before the addon is renamed into its store",
         "the store holds only a hidden temporary file (torcx skips it); the next boot's bootstrap removes it "
         "and converges",
         "the run ends ok, the kubelet runs, the store holds exactly the addon",
         "tests/integration/test_power.py::"
         "test_a_power_cut_before_the_addon_is_renamed_is_completed_by_the_next_boot"),
)

RACES: tuple[Case, ...] = (
    Case("race", "flows", "three-flows-together", "the three flows triggered at once",
         "bootstrap has nothing to do (the node is bootstrapped); new OS and new kubelet run one after the other "
         "(the flow lock); both OS versions get the new kubelet's Docker, the profile selects it, the node is "
         "annotated",
         "the two runs' locked steps do not overlap; both end ok; no temporary file",
         "tests/integration/test_races.py::test_the_three_flows_triggered_at_once"),
    Case("race", "flows", "kubelet-changes-in-quick-succession", "kubelet.env changed three times in a second",
         "the last version wins: its Docker is installed and selected (the re-check runs the flow again)",
         "the last run ends ok; no temporary file",
         "tests/integration/test_races.py::test_kubelet_env_changed_three_times_in_a_second"),
    Case("race", "steps", "same-step-twice-by-hand", "the addon step started twice by hand at once",
         "the second waits for the first (the run lock), then finds the addon in place: one download",
         "both exit 0; the run record says the step ended ok; no temporary file",
         "tests/integration/test_races.py::test_the_same_step_started_twice_by_hand_at_once"),
    Case("race", "steps", "same-unit-twice", "the same step unit started twice at once",
         "systemd merges the two starts into one job: the step runs once",
         "one start in the journal, one download",
         "tests/integration/test_races.py::test_the_same_unit_started_twice_at_once_runs_once"),
)


def bad_input_cases() -> int:
    """How many malformed and hostile inputs tests/unit/test_bad_input.py feeds the readers."""
    sys.path.insert(0, str(ROOT))
    from tests.unit.test_bad_input import CASES

    return len(CASES)


#: What the campaign found, how it was fixed, and the case that shows it.
FINDINGS: tuple[tuple[str, str, str], ...] = (
    ("The Docker reset marker was written after the profile: a kill between the two left the new Docker selected "
     "and no marker, and the next run, finding it selected, wrote none -- the new Docker would have started on "
     "the old one's data.",
     "The marker is written first; a marker whose Docker has not booted yet is left alone by the reset.",
     "kill points bootstrap/addons: renaming the Docker reset marker, writing the profile"),
    ("A kill after kubelet.env's rename left a bootstrap that could not finish: started again, its last step "
     "failed for want of the kubelet-env record, and after a reboot (or a power cut) nothing would ever have "
     "enabled the kubelet.",
     "The kubelet-env step enables the kubelet before it writes kubelet.env; the last step checks kubelet.env, "
     "not the record; a flow started again whose first steps skip continues its failed run.",
     "kill points bootstrap/kubelet-env; power loss: cut after kubelet.env"),
    ("A killed step left its temporary file in the stores, the profiles directory, /etc/kubernetes and the state "
     "directories, an interrupted GC or Docker reset left what it had moved aside, and the run read 'running' for "
     "the rest of the boot.",
     "Every step unit runs step-stopped after it (ExecStopPost=): after a failure it removes the temporary files of "
     "writers that are gone (their names carry the writer's pid), the moved-aside trees, and records how the "
     "process ended; every step sweeps dead writers' files before it begins (what a power cut left).",
     "every kill point"),
    ("A new directory (a versioned store, the manifest cache) was not synced into its parent: a power cut could "
     "take a new store, and the addon renamed into it, with it.",
     "Directories are created with make_dirs, which syncs each new one into its parent.",
     "power loss: every write path traced"),
    ("A Docker reset killed while deleting the old data, followed by a Docker that started meanwhile, made every "
     "later reset fail (the rename onto the leftover: ENOTEMPTY).",
     "What an interrupted reset moved aside is removed first.",
     "kill points docker-reset/data; tests/unit/test_dockerdata.py"),
    ("An answer cut short by a closed connection passed as whole (urllib3 1.26, Debian 12's, does not check "
     "Content-Length): a truncated manifest failed as a 'bad signature', a truncated addon as a 'sha512 "
     "mismatch', sending an operator to the keyring or the bucket's hashes.",
     "The manifest reader and the addon download compare what arrived with the Content-Length.",
     "faults release bucket: manifest and addon truncated"),
    ("A redirect loop was followed 30 times per request, on every retry.",
     "At most 5 redirects.", "fault release bucket: redirect loop"),
    ("Two copies of a step of one flow (by hand, or by hand and by systemd) both downloaded and interleaved their "
     "read-modify-write of the run record.",
     "A step holds its flow's run lock while it works (the annotation, which waits for the operator, only while "
     "it records).",
     "race: the addon step started twice by hand"),
    ("A failure that cannot heal by itself (a stranger's signature, a wrong hash) held the boot for the whole retry "
     "budget with only 'trying again in 30s'.",
     "Every failed attempt says the attempts left, their pauses and the unit's limit, and notes it on the run "
     "record; a verification failure adds that it rarely fixes itself and what would fix it.",
     "faults release bucket: wrong hash, stranger's signature"),
    ("A full store failed with 'No space left on device' and no file named.",
     "A refused write names the file.", "fault disk: the store is on a full file system"),
    ("sysext: the Docker reset marker was written after the image's link: a kill between the two left the new "
     "image linked and no marker, and the next run, finding it linked, wrote none -- the new Docker would have "
     "started on the old one's data.",
     "The marker is written before the link changes. The run after a kill past the link still reports the change "
     "(from the marker: the bootstrap reboots for it), and the reset empties the data only at a boot whose link "
     "names the Docker the marker expects (a marker written before a kill that came before the link changed "
     "waited for nothing otherwise).",
     "kill points bootstrap (sysext) and new-kubelet (sysext): the Docker reset marker, the image's link; "
     "tests/unit/test_sysext.py"),
    ("sysext: a step killed while caching the verified checksum list or an image's extension-release left its "
     "temporary file in /var/cache/torcx-tectonic/sysext for good: neither step-stopped nor the sweep at a step's "
     "start looked there.",
     "Both clean every kind of the cache, not only the manifests.",
     "kill points bootstrap (sysext): the checksum list, the extension-release; tests/unit/test_interrupted.py"),
    ("sysext: the image GC removed an image before its cached extension-release: killed between the two, it left "
     "the extension-release cached for good (the next GC no longer saw the image); and no removal was synced, so a "
     "power cut could bring removed images back.",
     "The extension-release goes first, then the image; each directory is synced after its removals.",
     "kill points new-os (sysext): GC; power loss: every write path traced; tests/unit/test_sysext.py"),
)

INTRO = """\
# Reliability: the fault campaign

Generated by `python -m tests.reliability > docs/reliability.md` from
`tests/reliability.py`, the list the campaign's tests run; a unit test keeps
this file in step with it. Every case below runs in `make test` on real
systemd 252 nodes (`simnode/`), and its result is what its test asserts.

## How a kill point is checked

The step runs alone on a node put back to the state just before it, under
`strace -e inject=SYSCALL:signal=SIGKILL:when=N` from a test drop-in (the
product has no hook for it; only the drop-in resets `SystemCallFilter=` for
ptrace): the step dies at the entry of that call, before it acts. Then:

- its trace ends at that call, unfinished (the point is deterministic);
- no temporary file is left where torcx, the kubelet or Docker look, nor in
  the state directories;
- every file the step changes (addons, profiles, next-profile, kubelet.env,
  the reset marker, Docker's data, the kubelet's enablement, the manifest
  cache, the step records) is as before the step or as after an
  uninterrupted run of it, byte for byte, and nothing else changed; the
  result column says which are already as after;
- the run record says the step's process was killed by signal KILL;
- the flow started again ends ok, with the node exactly as after an
  uninterrupted run of the whole flow.

Stall kills are the same, the step killed while it waits for a download
the bucket holds mid-body.

The points marked *(sysext)* run on a Flatcar-like node with the sysext
backend (`[runtime] backend = sysext`): Docker is a system extension image
that the steps download into `/opt/extensions/docker/`, check against the
running and the next OS, and link from `/etc/extensions/docker.raw` (a
temporary link renamed over it), masking Flatcar's own image; the new-OS
flow's GC removes images beyond `[sysext] keep`. The images, their links
and cached extension-releases are among the files compared.

## Decisions

- **Verification failures are retried** (a wrong hash, a bad or stranger's
  signature): a bucket that publishes a manifest, its signature and the
  addons one after the other, or a cache that serves an old copy of one of
  them, heals within the retry budget, and a keyring fixed meanwhile is read
  at the next attempt. But the first failure says that it rarely fixes
  itself, what would fix it, the attempts left, their pauses and the unit's
  time limit -- the boot is never held silently.
- **A full disk is not retried**: the node refused, and freeing it is an
  operator's job; the step fails at once naming the file.
- **Power loss** cannot be simulated in a container (the host's page cache
  survives): durability is checked on the system calls of every write path
  (fsync of the file before its rename, of the directory after), and what a
  cut leaves (a file renamed or not) by cutting a node's power while a step
  is held at a chosen call.
"""


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    out = [INTRO]
    kills = (*KILL_POINTS, *STALL_KILLS)
    out.append(f"## Kill points ({len(kills)})\n")
    for campaign in dict.fromkeys(p.campaign for p in kills):
        points = [p for p in kills if p.campaign == campaign]
        out.append(f"### {campaign} ({len(points)})\n")
        out.append("| # | step | killed | at the step's | result: the node right after |")
        out.append("|---|---|---|---|---|")
        for number, point in enumerate(points, start=1):
            nth = {1: "1st", 2: "2nd", 3: "3rd"}.get(point.occurrence, f"{point.occurrence}th")
            where = "download, stalled" if point.syscall == "stall" else f"{nth} such {_code(point.syscall)}"
            out.append(f"| {number} | {point.step} | {_cell(point.what)} | {where} | {_cell(point.outcome)} |")
        out.append("")
    faults = (*FAULTS, *POWER_CASES)
    out.append(f"## Faults ({len(faults)})\n")
    out.append(f"Unless a row says otherwise, each fault test also asserts: {FAULT_CHECKS}.\n")
    for area in dict.fromkeys(c.area for c in faults):
        cases = [c for c in faults if c.area == area]
        out.append(f"### {area} ({len(cases)})\n")
        out.append("| fault | result | also checked | test |")
        out.append("|---|---|---|---|")
        for case in cases:
            checks = "" if case.checks == FAULT_CHECKS else _cell(case.checks)
            out.append(f"| {_cell(case.name)} | {_cell(case.result)} | {checks} | {_code(case.test.split('::')[1])} |")
        out.append("")
    out.append(f"## Races ({len(RACES)})\n")
    out.append("| race | result | also checked | test |")
    out.append("|---|---|---|---|")
    for case in RACES:
        out.append(f"| {_cell(case.name)} | {_cell(case.result)} | {_cell(case.checks)} | "
                   f"{_code(case.test.split('::')[1])} |")
    out.append("")
    bad = bad_input_cases()
    out.append(f"## Bad input ({bad})\n")
    out.append(f"`tests/unit/test_bad_input.py` feeds {bad} malformed and hostile inputs to every reader and client "
               "(configuration, manifests, signatures, keyrings, mappings, kubeconfigs, os-release, kubelet.env, "
               "profiles, answers of the bucket and the api-server): each is one error naming the source and what "
               "was expected, and the node is byte for byte as before.\n")
    out.append(f"## What the campaign found ({len(FINDINGS)})\n")
    out.append("| found | fixed | shown by |")
    out.append("|---|---|---|")
    for found, fixed, shown in FINDINGS:
        out.append(f"| {_cell(found)} | {_cell(fixed)} | {_cell(shown)} |")
    out.append("")
    out.append("## Counts\n")
    out.append("```")
    out.append(f"kill points: {len(kills)}")
    out.append(f"faults: {len(faults)}")
    out.append(f"races: {len(RACES)}")
    out.append(f"bad-input cases: {bad}")
    out.append("```")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
