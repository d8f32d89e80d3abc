"""Steps: the Kubernetes version a flow works for, and the re-check after a
new-kubelet run."""

from __future__ import annotations

import logging

from ..cluster.mappings import kube_minor
from ..node import kubeletenv, systemd
from ..state import FlowState, KubeletImageChoice, KubeletRechecked, KubernetesVersion
from .context import Context

log = logging.getLogger(__name__)
SOURCES = ("cluster", "kubelet-env")


def kubernetes_version(ctx: Context, *, source: str) -> KubernetesVersion:
    """The Kubernetes version: forced, the cluster's (falling back to the
    installer's), or the one the local kubelet.env selects."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r}: expected one of {', '.join(SOURCES)}")
    kube = ctx.config.kubernetes
    if kube.force_version:
        version, origin = kube.force_version, "[kubernetes] force_version"
    elif source == "kubelet-env":
        version, origin = kubeletenv.kubelet_version(kube.kubelet_env), str(kube.kubelet_env)
    else:
        cluster = ctx.cluster()
        version, origin = cluster.version()
        ctx.remember(cluster)
    kube_minor(version)
    log.info("Kubernetes version %s (from %s)", version, origin)
    return KubernetesVersion(version=version, source=origin)


def kubelet_version(state: FlowState) -> str:
    """The Kubernetes version the node's kubelet runs after this run: the
    kubelet image's when the run chose one (it may trail the api-server, and
    the runtime and kubelet.env follow it), else the run's Kubernetes version."""
    image = state.fact(KubeletImageChoice)
    return image.version if image is not None and image.version else state.load(KubernetesVersion).version


def recheck(ctx: Context, *, anchor: str) -> KubeletRechecked:
    """After a new-kubelet run: if kubelet.env changed again while it ran, run
    the flow again. A change that arrives while the flow runs only merges
    into the running job, so without this the newer version would be lost."""
    kube = ctx.config.kubernetes
    used = ctx.state.load(KubernetesVersion).version
    now = kube.force_version or kubeletenv.kubelet_version(kube.kubelet_env)
    if now == used:
        return KubeletRechecked(used=used, now=now, rerun=False)
    log.info("%s changed to Kubernetes %s while the flow handled %s: running it again", kube.kubelet_env, now, used)
    systemd.start(anchor)
    return KubeletRechecked(used=used, now=now, rerun=True)
