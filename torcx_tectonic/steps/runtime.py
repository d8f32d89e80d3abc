"""Step: the container runtime version for the Kubernetes version (docs/design.md, 'Version choice').

The manifests of the OS versions involved are fetched and verified once,
here, and kept in the cache; the record names their digests, so the addon
step installs from exactly what was verified.
"""

from __future__ import annotations

import logging

from .. import strategy
from ..errors import InputError
from ..state import KubernetesVersion, ManifestCache, OsVersions, RuntimeChoice
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
    try:
        preferred = mappings.versions_for(kube, addon)
    except InputError as err:
        lead = wanted[0]
        raise strategy.NoRuntimeVersion(
            f"no {addon} version for Kubernetes {kube}: {err}; the manifest for OS {lead} offers "
            f"{', '.join(offered[lead]) or 'none'}") from None
    plan = strategy.choose(kube_version=kube, preferred=preferred, mapping_source=mappings.source,
                           current_os=current, next_os=upcoming, offered=offered, runtime=addon)
    assert plan is not None  # wanted is not empty
    log.info("%s %s for Kubernetes %s, for OS %s", addon, plan.version, kube, ", ".join(plan.os_versions))
    return RuntimeChoice(runtime=addon, version=plan.version, os_versions=plan.os_versions, kube_version=kube,
                         preferred=tuple(preferred), mapping_source=mappings.source, offered=offered,
                         manifests=digests)
