"""The steps of every flow: gather facts, decide, act, record.

Each function is one oneshot unit's work. It reads what earlier steps
recorded, calls the pure decisions of the domain modules, acts at the edges,
and returns the facts to record.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import dockerreset, kubeletenv, lock, osrelease, profile, store, strategy, systemd, updateengine
from .atomic import write_atomic, write_if_changed
from .bucket import Bucket, load_manifest
from .config import Config
from .envfile import parse_env
from .errors import InputError, NetworkError, TorcxTectonicError
from .facts import Facts
from .flows import BOOTSTRAP, PATH_UNITS
from .kube import MAPPINGS_CONFIGMAP, MAPPINGS_KEY, MAPPINGS_NAMESPACE, KubeClient, load_kubeconfig
from .manifest import file_sha512
from .mappings import RuntimeMappings, kube_minor, parse_mappings
from .paths import (
    BOOTSTRAP_FINISH_PENDING,
    DOCKER_DATA,
    DOCKER_RESET_MARKER,
    LOCK_FILE,
    NEXT_PROFILE,
    TORCX_METADATA,
    USER_PROFILES,
    USER_STORE,
    VENDOR_PROFILES,
    VENDOR_STORE,
)

log = logging.getLogger(__name__)

Record = dict[str, Any]


@dataclass(frozen=True)
class Context:
    """What every step gets: the configuration and its flow's facts."""

    config: Config
    facts: Facts


# --- step 1: the OS versions -------------------------------------------------

def next_os(ctx: Context, attempt: bool) -> Record:
    """Find the running OS and the one that boots next; with ``attempt``,
    force an OS update first (bootstrap)."""
    if ctx.facts.flow == BOOTSTRAP:
        ctx.facts.clear()  # a new bootstrap run starts from fresh facts
    current = osrelease.read_os_release()
    boot = ctx.config.bootstrap
    record: Record = {"current_os": current.version, "board": current.board}
    status: updateengine.Status | None = None
    if attempt:
        outcome, status, failures = _update_with_retries(boot.os_update_attempts, boot.os_update_timeout)
        record["update"] = outcome
        record["update_failures"] = failures
        if outcome == updateengine.Outcome.FAILED.value:
            failed = f"OS update failed {len(failures)} time(s): {'; '.join(failures)}"
            if boot.os_update_failure == "fail":
                raise TorcxTectonicError(failed, hint="set [bootstrap] os_update_failure=continue to go on")
            message = (f"{failed}; continuing on the running OS {current.version}; "
                       "the new-OS flow will handle the next update")
            log.error("%s", message)
            record["warning"] = message
    else:
        try:
            status = updateengine.get_status()
        except updateengine.UpdateEngineError as err:
            if ctx.facts.flow != BOOTSTRAP:
                raise
            log.warning("%s; assuming no pending update", err)
            status = None
    if status is not None and status.update_applied and status.pending_version is None:
        raise TorcxTectonicError(
            f"update_engine has applied an OS update but reports its version as {status.new_version!r}: "
            "cannot prepare the addons for the next OS", hint="the step is retried; a reboot also resolves it")
    pending = status.pending_version if status else None
    record["next_os"] = pending if pending and pending != current.version else None
    if record["next_os"]:
        osrelease.parse_os_version(record["next_os"], "update_engine new_version")
        log.info("running OS %s, next OS %s", current.version, record["next_os"])
    else:
        log.info("running OS %s, no OS update pending", current.version)
    return record


def _update_with_retries(attempts: int, timeout: float) -> tuple[str, updateengine.Status | None, list[str]]:
    failures: list[str] = []
    for number in range(1, max(attempts, 1) + 1):
        try:
            outcome, status = updateengine.attempt_update(timeout)
        except updateengine.UpdateEngineError as err:
            failures.append(str(err))
        else:
            if outcome is not updateengine.Outcome.FAILED:
                log.info("OS update attempt %d: %s %s", number, outcome.value, status.new_version)
                return outcome.value, status, failures
            failures.append(f"update_engine reported an error event (attempt {number})")
        log.warning("OS update attempt %d of %d failed: %s", number, attempts, failures[-1])
        with contextlib.suppress(updateengine.UpdateEngineError):
            updateengine.reset_status()
    return updateengine.Outcome.FAILED.value, None, failures


# --- step 2: the Kubernetes version -------------------------------------------

def kubelet_version(ctx: Context, source: str) -> Record:
    """The Kubernetes version: forced, the cluster's (falling back to the
    installer's) or the one the local kubelet.env selects."""
    kube = ctx.config.kubernetes
    if kube.force_version:
        version, origin = kube.force_version, "[kubernetes] force_version"
    elif source == "kubelet-env":
        version, origin = kubeletenv.kubelet_version(kube.kubelet_env), str(kube.kubelet_env)
    else:
        version, origin = _cluster_version(ctx.config)
    kube_minor(version)
    log.info("Kubernetes version %s (from %s)", version, origin)
    return {"kube_version": version, "source": origin}


def _client(config: Config) -> KubeClient | None:
    """A client for the api-server, or None when there is no kubeconfig."""
    path = config.kubernetes.kubeconfig
    if not path.exists():
        log.warning("no kubeconfig at %s: cannot ask the api-server", path)
        return None
    return KubeClient(load_kubeconfig(path), config.network)


def _cluster_version(config: Config) -> tuple[str, str]:
    client = _client(config)
    if client is not None:
        with client:
            try:
                return client.version(), f"api-server {client.creds.server}"
            except NetworkError as err:
                log.warning("%s; using the installer's kubelet version", err)
    path = config.kubernetes.installer_kubelet_env
    return kubeletenv.kubelet_version(path), str(path)


# --- step 3: the Docker version ------------------------------------------------

def _mappings(config: Config) -> RuntimeMappings:
    """The cluster's ConfigMap, falling back to the node-local file."""
    addon = config.torcx.addon
    client = _client(config)
    if client is not None:
        with client:
            try:
                text = client.configmap_value(MAPPINGS_NAMESPACE, MAPPINGS_CONFIGMAP, MAPPINGS_KEY)
            except NetworkError as err:
                log.warning("%s; using the node-local runtime mappings", err)
            else:
                if text is not None:
                    source = f"ConfigMap {MAPPINGS_NAMESPACE}/{MAPPINGS_CONFIGMAP}"
                    return parse_mappings(text, source, addon)
                log.warning("ConfigMap %s/%s has no %s; using the node-local runtime mappings",
                            MAPPINGS_NAMESPACE, MAPPINGS_CONFIGMAP, MAPPINGS_KEY)
    path = config.kubernetes.runtime_mappings
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"no runtime mappings: the ConfigMap is unavailable and {path} does not exist") from None
    return parse_mappings(text, str(path), addon)


def manifest_blob(facts: Facts, os_version: str) -> Path:
    return facts.blob_path(f"manifest-{os_version}.json")


def docker_version(ctx: Context) -> Record:
    """Decide the Docker version and the OS versions to install it for."""
    config = ctx.config
    addon = config.torcx.addon
    os_facts = ctx.facts.load("next-os")
    kube = ctx.facts.load("kubelet-version")
    current, upcoming = os_facts["current_os"], os_facts["next_os"]
    wanted = [v for v in dict.fromkeys([upcoming or current, current]) if strategy.supports_addons(v)]
    if not wanted:
        log.info("OS %s is older than %s: no torcx addons to manage", current, strategy.ADDON_EPOCH)
        return {"plan": None, "reason": f"OS older than {strategy.ADDON_EPOCH}"}
    offered: dict[str, tuple[str, ...]] = {}
    with Bucket(config) as bucket:
        for os_version in wanted:
            fetched = bucket.manifest(os_facts["board"], os_version)
            offered[os_version] = fetched.packages.versions_of(addon)
            write_atomic(manifest_blob(ctx.facts, os_version), fetched.raw)
            log.info("manifest for OS %s offers %s %s", os_version, addon, ", ".join(offered[os_version]) or "nothing")
    mappings = _mappings(config)
    try:
        preferred = mappings.versions_for(kube["kube_version"], addon)
    except InputError as err:
        lead = wanted[0]
        raise strategy.NoRuntimeVersion(
            f"no {addon} version for Kubernetes {kube['kube_version']}: {err}; the manifest for OS {lead} offers "
            f"{', '.join(offered[lead]) or 'none'}") from None
    plan = strategy.choose(kube_version=kube["kube_version"], preferred=preferred, mapping_source=mappings.source,
                           current_os=current, next_os=upcoming, offered=offered, runtime=addon)
    assert plan is not None  # wanted is not empty
    log.info("%s %s for Kubernetes %s, for OS %s", addon, plan.version, kube["kube_version"],
             ", ".join(plan.os_versions))
    return {"plan": {"version": plan.version, "os_versions": list(plan.os_versions)}, "preferred": list(preferred),
            "mapping_source": mappings.source, "offered": {k: list(v) for k, v in offered.items()}}


# --- step 4: addons and profile --------------------------------------------------

def install_addons(ctx: Context) -> Record:
    """Put the chosen addon in the stores of its OS versions and select it."""
    config = ctx.config
    addon = config.torcx.addon
    os_facts = ctx.facts.load("next-os")
    plan = ctx.facts.load("docker-version")["plan"]
    if plan is None:
        return {"installed": [], "docker_changed": False}
    version, current = plan["version"], os_facts["current_os"]
    installed = []
    with Bucket(config) as bucket:
        for os_version in plan["os_versions"]:
            entry = load_manifest(manifest_blob(ctx.facts, os_version)).package(addon)
            found = entry.find(version) if entry else None
            if found is None:
                raise InputError(f"manifest for OS {os_version} lost {addon} {version} between steps")
            installed.append({"os": os_version, **_install_one(bucket, config, os_version, current, found)})
    booted = profile.booted_reference(TORCX_METADATA, addon)
    before = booted
    if before is None:
        next_name = profile.read_next_profile(NEXT_PROFILE)
        for directory in (USER_PROFILES, VENDOR_PROFILES):
            before = profile.selected_reference(profile.load_profile(directory, next_name or "vendor"), addon)
            if before:
                break
    name, changed = profile.select_image(user_profiles=USER_PROFILES, vendor_profiles=VENDOR_PROFILES,
                                         next_profile_file=NEXT_PROFILE, configured=config.torcx.profile,
                                         name=addon, reference=version)
    docker_changed = before != version
    if docker_changed and dockerreset.arrange(DOCKER_RESET_MARKER, before, version):
        systemd.enable(dockerreset.RESET_UNIT)
        log.warning("%s changes from %s to %s: %s will be emptied before it starts", addon, before, version,
                    DOCKER_DATA)
    # Only what torcx says booted can cancel a pending reset: the next profile
    # already names the new version after a first run.
    if booted == version and dockerreset.cancel(DOCKER_RESET_MARKER):
        log.info("%s %s is the one running again: %s will not be emptied", addon, version, DOCKER_DATA)
    log.info("profile %s selects %s:%s%s", name, addon, version, "" if changed else " (unchanged)")
    return {"installed": installed, "profile": name, "changed": [str(p) for p in changed],
            "docker_changed": docker_changed, "previous_docker": before, "docker": version}


def _install_one(bucket: Bucket, config: Config, os_version: str, current: str, found: Any) -> Record:
    addon = config.torcx.addon
    vendor = found.vendor_path(VENDOR_STORE)
    if vendor is not None:
        if os_version != current:
            return {"action": "vendor", "path": str(vendor)}
        if vendor.is_file() and file_sha512(vendor) == found.sha512:
            return {"action": "vendor", "path": str(vendor)}
        log.warning("%s is listed but not present with the right hash: downloading instead", vendor)
    target_store = store.versioned_store(USER_STORE, os_version)
    target = target_store / store.addon_filename(addon, found.version)
    if store.has_addon(target_store, addon, found.version, found.sha512):
        return {"action": "present", "path": str(target)}
    url = found.url()
    if url is None:
        raise InputError(f"manifest for OS {os_version}: {addon} {found.version} has no url and is not in the "
                         "vendor store")
    log.info("downloading %s for OS %s from %s", target.name, os_version, url)
    store.install_addon(target_store, addon, found.version, found.sha512,
                        bucket.download(url, f"{target.name} for OS {os_version}"), url)
    return {"action": "downloaded", "path": str(target), "url": url}


# --- step 5 and 6 of bootstrap ------------------------------------------------------

def kubelet_env(ctx: Context) -> Record:
    """Write kubelet.env from the installer's copy with the chosen version."""
    kube = ctx.config.kubernetes
    version = ctx.facts.load("kubelet-version")["kube_version"]
    try:
        template = kube.installer_kubelet_env.read_text()
    except FileNotFoundError:
        raise InputError(f"{kube.installer_kubelet_env}: missing; expected the installer's kubelet.env") from None
    parse_env(template, str(kube.installer_kubelet_env))
    text = kubeletenv.with_value(template, kubeletenv.IMAGE_TAG_KEY, kubeletenv.version_to_tag(version))
    written = write_if_changed(kube.kubelet_env, text)
    write_atomic(BOOTSTRAP_FINISH_PENDING, "")
    log.info("%s %s with %s=%s", kube.kubelet_env, "written" if written else "already right",
             kubeletenv.IMAGE_TAG_KEY, kubeletenv.version_to_tag(version))
    return {"path": str(kube.kubelet_env), "written": written, "kube_version": version}


def finish_bootstrap(ctx: Context) -> Record:
    """Enable the kubelet; reboot when the OS or Docker changed."""
    os_facts = ctx.facts.load("next-os")
    docker_changed = False
    if ctx.facts.path("install-addons").exists():
        docker_changed = bool(ctx.facts.load("install-addons")["docker_changed"])
    reasons = ([f"OS {os_facts['next_os']} is installed"] if os_facts.get("next_os") else []) + (
        ["Docker changed"] if docker_changed else [])
    enabled = systemd.enable("kubelet.service")
    BOOTSTRAP_FINISH_PENDING.unlink(missing_ok=True)
    reboot = bool(reasons) and ctx.config.bootstrap.reboot
    record: Record = {"kubelet_enabled": enabled, "reboot": reboot, "reboot_reasons": reasons}
    if reboot:
        log.warning("rebooting: %s", ", ".join(reasons))
        ctx.facts.record("finish-bootstrap", "ok", **record)
        systemd.reboot()
    else:
        if reasons:
            log.warning("a reboot is needed (%s) but [bootstrap] reboot=no", ", ".join(reasons))
        systemd.start("kubelet.service")
        for unit in PATH_UNITS:  # the node is bootstrapped: follow OS and kubelet changes from now on
            systemd.start(unit)
    return record


# --- new OS: GC and annotation --------------------------------------------------------

def gc_stores(ctx: Context) -> Record:
    current = ctx.facts.load("next-os")["current_os"]
    removed = store.gc_versioned_stores(USER_STORE, current)
    log.info("removed versioned stores older than %s: %s", current, ", ".join(removed) or "none")
    return {"removed": removed}


def annotate_node(ctx: Context) -> Record:
    """Wait for the update operator's before-reboot label, then annotate.

    The operator deletes hook annotations when it sets the label, so an
    annotation written earlier would be lost and the node would wait forever.
    """
    kube = ctx.config.kubernetes
    ctx.facts.load("install-addons")
    prefix = kube.annotation.rpartition("/")[0]
    label = f"{prefix}/before-reboot"
    client = _client(ctx.config)
    if client is None:
        raise InputError(f"no kubeconfig at {kube.kubeconfig}: cannot annotate node {kube.node_name}")
    with client:
        deadline = time.monotonic() + kube.label_timeout
        pause = 1.0
        while True:
            labels = (client.node(kube.node_name).get("metadata") or {}).get("labels") or {}
            if labels.get(label) == "true":
                break
            if time.monotonic() + pause > deadline:
                raise TorcxTectonicError(f"node {kube.node_name} did not get the label {label}=true within "
                                         f"{kube.label_timeout:.0f}s")
            log.info("waiting for the update operator to label node %s %s=true", kube.node_name, label)
            time.sleep(pause)
            pause = min(pause * 2, kube.label_poll_max_interval)
        with lock.held(LOCK_FILE):  # not while another flow is half done (the reboot may follow at once)
            client.annotate_node(kube.node_name, {kube.annotation: "true"})
    log.info("node %s annotated %s=true", kube.node_name, kube.annotation)
    return {"node": kube.node_name, "annotation": kube.annotation, "label": label}


def recheck_kubelet(ctx: Context, anchor: str) -> Record:
    """After a new-kubelet run: if kubelet.env changed again while it ran, run
    the flow again. A change that arrives while the flow runs only merges
    into the running job, so without this the newer version would be lost."""
    kube = ctx.config.kubernetes
    used = ctx.facts.load("kubelet-version")["kube_version"]
    now = kube.force_version or kubeletenv.kubelet_version(kube.kubelet_env)
    if now == used:
        return {"kube_version": used, "rerun": False}
    log.info("%s changed to Kubernetes %s while the flow handled %s: running it again", kube.kubelet_env, now, used)
    systemd.start(anchor)
    return {"kube_version": used, "now": now, "rerun": True}


def docker_reset(ctx: Context) -> Record:
    removed = dockerreset.reset(DOCKER_RESET_MARKER, DOCKER_DATA,
                                profile.booted_reference(TORCX_METADATA, ctx.config.torcx.addon))
    log.info("emptied %s (%d entries)", DOCKER_DATA, len(removed))
    return {"removed": removed}
