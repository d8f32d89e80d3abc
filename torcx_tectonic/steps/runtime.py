"""Step: the container runtime version for the Kubernetes version (docs/design.md, 'Version choice').

The manifests of the OS versions involved are fetched and verified once,
here, and kept in the cache; the record names their digests, so the addon
step installs from exactly what was verified.

An operator's pin (docs/design.md, 'Pins') is read at every run, here and in
the sysext backend's choice: the node's annotation, else ``[runtime] pin``.
"""

from __future__ import annotations

import logging

from .. import strategy
from ..cluster.mappings import RuntimeMappings
from ..cluster.view import PIN_ANNOTATION, Cluster
from ..errors import InputError
from ..state import KubernetesVersion, ManifestCache, OsVersions, RuntimeChoice, RuntimePin
from ..torcx.bucket import Bucket
from .context import Context

log = logging.getLogger(__name__)


def choose_runtime(ctx: Context) -> RuntimeChoice:
    """Decide the runtime version and the OS versions to install it for."""
    config = ctx.config
    addon = config.torcx.addon
    os_versions = ctx.state.load(OsVersions)
    kube = ctx.state.load(KubernetesVersion).version
    current, upcoming = os_versions.current, os_versions.next
    wanted = [v for v in dict.fromkeys([upcoming or current, current]) if strategy.supports_addons(v)]
    if not wanted:
        log.info("OS %s is older than %s: no torcx addons to manage", current, strategy.ADDON_EPOCH)
        return RuntimeChoice(runtime=addon, version=None, os_versions=(), kube_version=kube,
                             reason=f"OS {current} is older than {strategy.ADDON_EPOCH}: no remote addons")
    cache = ManifestCache(ctx.paths.cache_dir)
    offered: dict[str, tuple[str, ...]] = {}
    digests: dict[str, str] = {}
    with Bucket(config) as bucket:
        for os_version in wanted:
            fetched = bucket.manifest(os_versions.board, os_version)
            offered[os_version] = fetched.packages.versions_of(addon)
            digests[os_version] = cache.put(os_versions.board, os_version, fetched.raw)
            log.info("manifest for OS %s offers %s %s", os_version, addon, ", ".join(offered[os_version]) or "nothing")
    cluster = ctx.cluster()
    mappings = cluster.runtime_mappings()
    ctx.remember(cluster)
    pin = read_pin(ctx, cluster, mappings, addon)
    try:
        preferred = mappings.versions_for(kube, addon)
    except InputError as err:
        lead = wanted[0]
        raise strategy.NoRuntimeVersion(
            f"no {addon} version for Kubernetes {kube}: {err}; the manifest for OS {lead} offers "
            f"{', '.join(offered[lead]) or 'none'}") from None
    plan = strategy.choose(kube_version=kube, preferred=preferred, mapping_source=mappings.source,
                           current_os=current, next_os=upcoming, offered=offered, runtime=addon, pin=pin)
    assert plan is not None  # wanted is not empty
    log.info("%s %s for Kubernetes %s, for OS %s", addon, plan.version, kube, ", ".join(plan.os_versions))
    return RuntimeChoice(runtime=addon, version=plan.version, os_versions=plan.os_versions, kube_version=kube,
                         preferred=tuple(preferred), mapping_source=mappings.source, offered=offered,
                         manifests=digests)


def read_pin(ctx: Context, cluster: Cluster, mappings: RuntimeMappings, runtime: str) -> strategy.Pin | None:
    """The pin in force, read at every run (the operator may set or remove
    it at any time): the node's annotation, else ``[runtime] pin``. An
    api-server that cannot be asked leaves the key, and the journal and the
    pin's source say so. Kept for the run (and the status) before the
    choice, which may fail because of it."""
    found = None if cluster.unreachable else cluster.node_annotation(PIN_ANNOTATION)
    ctx.remember(cluster)
    key_source = "[runtime] pin"
    if found is None:
        key_source += " (the node's annotation could not be read)"
        log.warning("the node's %s annotation could not be read: using [runtime] pin (%s)", PIN_ANNOTATION,
                    ctx.config.runtime.pin or "not set")
    annotation, annotation_source = found or (None, "")
    try:
        pin = strategy.resolve_pin(annotation, annotation_source, ctx.config.runtime.pin, key_source, runtime,
                                   mappings.by_minor, mappings.source)
    except InputError as err:
        ctx.state.save(RuntimePin(version=None, source=f"refused: {err}"))
        raise
    ctx.state.save(RuntimePin(version=pin.version, source=pin.source) if pin else RuntimePin(
        version=None, source=f"no pin ({PIN_ANNOTATION} and [runtime] pin are not set)"))
    if pin is not None:
        log.info("%s is pinned to %s (%s): the runtime mappings' preference does not count", runtime, pin.version,
                 pin.source)
    return pin
