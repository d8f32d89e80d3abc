"""Steps 5 and 6 of bootstrap: write kubelet.env, then enable the kubelet
and decide whether the node reboots (the step runner queues the reboot once
the run says so).

kubelet.env marks a bootstrapped node: once it exists, no bootstrap step
runs at a later boot. So the kubelet is enabled before kubelet.env is
written: a node that loses power (or the step its process) right after the
rename still starts its kubelet at the next boot. A bootstrap started again
in the same boot continues the run (every step before the last one skips)
and the last step starts the kubelet or reboots; it needs no record of the
kubelet.env step, which a kill right after the rename leaves unwritten.
"""

from __future__ import annotations

import logging

from ..edges.atomic import write_if_changed
from ..errors import InputError
from ..flows import path_units
from ..node import kubeletenv, systemd
from ..state import (
    RECORDS,
    RUNNING,
    BootstrapFinished,
    KubeletEnvWritten,
    OsVersions,
    RuntimeInstalled,
)
from .context import Context
from .kubeversion import kubelet_version

log = logging.getLogger(__name__)
KUBELET_UNIT = "kubelet.service"


def write_kubelet_env(ctx: Context) -> KubeletEnvWritten:
    """kubelet.env from the installer's copy, with the chosen version."""
    kube = ctx.config.kubernetes
    version = kubelet_version(ctx.state)
    tag = kubeletenv.version_to_tag(version)
    text = kubeletenv.with_version(kube.installer_kubelet_env, version)
    if not kube.kubelet_env.exists() and systemd.enable(KUBELET_UNIT):  # before the file that ends the bootstrap
        log.info("%s enabled for the next boots", KUBELET_UNIT)
    written = write_if_changed(kube.kubelet_env, text)
    log.info("%s %s with %s=%s", kube.kubelet_env, "written" if written else "already right",
             kubeletenv.IMAGE_TAG_KEY, tag)
    return KubeletEnvWritten(path=str(kube.kubelet_env), written=written, kube_version=version)


def reboot_reasons(os_versions: OsVersions, *installed: RuntimeInstalled | None) -> tuple[str, ...]:
    """Why the node must reboot before the kubelet runs: a new OS waits, or
    an image the backend put in place changed (the runtime, the kubelet's)."""
    changes = (record.change() for record in installed if record is not None)
    return tuple(reason for reason in (f"OS {os_versions.next} is installed" if os_versions.next else None, *changes)
                 if reason is not None)


def finish(ctx: Context, *, installs: str | None, kubelet: str | None = None) -> BootstrapFinished:
    """Enable the kubelet; reboot when the OS or the runtime changed, else
    start the kubelet and the path units that follow a bootstrapped node.
    ``installs`` names the record of the step that put the runtime in place
    (none when the bootstrap leaves the runtime alone), ``kubelet`` the one
    of the kubelet's image (none when the backend does not keep it)."""
    if ctx.state.current().result != RUNNING:
        log.info("this boot's bootstrap already ended: nothing to do")
        return BootstrapFinished(kubelet_enabled=False, reboot=False, already_finished=True)
    kubelet_env = ctx.config.kubernetes.kubelet_env
    if not kubelet_env.exists():
        raise InputError(f"{kubelet_env}: missing; the kubelet-env step writes it before the bootstrap finishes")
    installed = [ctx.state.load(RECORDS[name]) for name in (installs, kubelet) if name is not None]
    if not all(isinstance(record, RuntimeInstalled) for record in installed):
        raise TypeError(f"the records {installs!r}, {kubelet!r} the finish reads are not all install records")
    reasons = reboot_reasons(ctx.state.load(OsVersions), *(r for r in installed if isinstance(r, RuntimeInstalled)))
    enabled = systemd.enable(KUBELET_UNIT)
    reboot = bool(reasons) and ctx.config.bootstrap.reboot
    if not reboot:
        if reasons:
            log.warning("a reboot is needed (%s) but [bootstrap] reboot=no", ", ".join(reasons))
        systemd.start(KUBELET_UNIT)
        for unit in path_units(ctx.config):  # the node is bootstrapped: follow OS and kubelet changes from now on
            systemd.start(unit)
    return BootstrapFinished(kubelet_enabled=enabled, reboot=reboot, reboot_reasons=reasons)
