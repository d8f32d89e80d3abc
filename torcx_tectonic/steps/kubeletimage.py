"""Steps of the sysext backend for the kubelet's image (``[sysext] kubernetes``).

On Flatcar without torcx the kubelet, too, is a system extension image
(the sysext-bakery's ``kubernetes-v1.30.4-x86-64.raw``). These steps keep it
in step with the api-server as the runtime's image is kept: its version is
chosen under Kubernetes' version-skew policy (cluster/skew.py) from the same
signed checksum list, the image is stored, checked against the running and
the next OS and linked by the same code as the runtime's
(``extension.install_image``), and kubelet.env keeps saying the kubelet's
version, as in the torcx era. A control-plane upgrade reaches the node
through ``follow_api_server`` (a timer): it moves kubelet.env one minor at a
time towards the api-server's version, and the new-kubelet flow that
kubelet.env's change starts links the image and the runtime of that minor.

An image a systemd-sysupdate transfer manages is left to it (sysupdate.py):
the steps say so and touch nothing of it.
"""

from __future__ import annotations

import logging

from ..cluster import skew
from ..cluster.view import API_SERVER, client
from ..edges.atomic import write_if_changed
from ..edges.inputfile import read_text
from ..errors import InputError
from ..node import kubeletenv
from ..node.osrelease import os_release_from_text
from ..state import KubeletFollowed, KubeletImageChoice, KubeletImageInstalled, KubernetesVersion, OsVersions
from ..sysext import images as sysext
from ..sysext import sysupdate
from ..sysext.backend import SysextBackend
from .context import Context
from .extension import SUMS, install_image, signed_sums

log = logging.getLogger(__name__)
KUBERNETES = sysext.KUBERNETES


def offered_versions(sums: dict[str, str], arch: str) -> list[skew.Version]:
    """The kubelet versions a checksum list has an image of for ``arch``
    (names that are not the bakery's ``vX.Y.Z`` are not kubelet images)."""
    return [found for text in sysext.offered(sums, KUBERNETES, arch) if (found := skew.image_version(text))]


def choose_kubelet_image(ctx: Context) -> KubeletImageChoice:
    """The kubelet image for the run's Kubernetes version (the api-server's
    in the bootstrap, kubelet.env's afterwards) under the skew policy, one
    minor above the linked one at most."""
    paths = ctx.paths
    target = ctx.state.load(KubernetesVersion)
    link = paths.extension_link(KUBERNETES)
    transfer = sysupdate.owner(paths, KUBERNETES)
    if transfer is not None:
        log.warning("%s", transfer.refusal(KUBERNETES, paths.on_node(link)))
        return KubeletImageChoice(name=KUBERNETES, version=None, target=target.version, reason=transfer.describe(),
                                  managed_by=transfer.path)
    arch = sysext.arch_of(ctx.state.load(OsVersions).board)
    sums, digest = signed_sums(ctx, KUBERNETES)
    offered = offered_versions(sums, arch)
    current = skew.image_version(sysext.linked_version(link, KUBERNETES) or "")
    chosen, reason = skew.choose_kubelet(_at_most_the_api_server(ctx, target), offered, current)
    log.info("kubelet image %s for Kubernetes %s (%s): %s", chosen, target.version, target.source, reason)
    return KubeletImageChoice(name=KUBERNETES, version=str(chosen), target=target.version, reason=reason,
                              current=str(current) if current else None, offered=tuple(map(str, offered)),
                              manifests={SUMS: digest})


def _at_most_the_api_server(ctx: Context, target: KubernetesVersion) -> skew.Version:
    """The version to choose for: the run's, but never newer than the
    api-server's when the api-server answers (kubelet.env edited by hand to a
    newer version does not make the kubelet newer than the control plane)."""
    wanted = skew.api_version(target.version, target.source)
    cluster = ctx.cluster()
    try:
        version, origin = cluster.version()
    except InputError:  # no api-server, and no installer's file to fall back on: nothing to compare with
        return wanted
    finally:
        ctx.remember(cluster)
    if not origin.startswith(API_SERVER):
        return wanted
    server = skew.api_version(version, origin)
    if server < wanted:
        log.warning("%s selects Kubernetes %s, newer than the api-server's %s: the kubelet image stays at most %s",
                    target.source, target.version, version, server)
        return server
    return wanted


def install_kubelet_image(ctx: Context) -> KubeletImageInstalled:
    """Put the chosen kubelet image in place as the runtime's is put (nothing
    when systemd-sysupdate manages it), and say when the new kubelet binary
    takes over: kubelet.service runs the binary it started with until it
    restarts, and the image is merged at the next boot unless ``activate = refresh``."""
    choice = ctx.state.load(KubeletImageChoice)
    if choice.version is None:
        link = ctx.paths.extension_link(KUBERNETES)
        return KubeletImageInstalled(runtime=KUBERNETES, version=sysext.linked_version(link, KUBERNETES) or "",
                                     image="", link=str(link), action="left to systemd-sysupdate",
                                     managed_by=choice.managed_by)
    installed = install_image(ctx, KUBERNETES, choice.version, choice.manifests.get(SUMS), KubeletImageInstalled,
                              mask_builtin=False)
    if installed.runtime_changed:
        log.warning("the kubelet changes from %s to %s: the new kubelet binary takes over %s", installed.previous
                    or "none", installed.version, takes_over(installed.activated))
    return installed


def takes_over(activated: str) -> str:
    """When a newly linked kubelet image's binary runs, and why."""
    if activated == sysext.MERGED_NOW:
        return ("when kubelet.service restarts (the image is merged now; the running kubelet keeps the binary it "
                "started with)")
    return "at the next boot (systemd-sysext merges the image then; the running kubelet keeps its binary)"


def follow_api_server(ctx: Context) -> KubeletFollowed:
    """Move kubelet.env's version towards the api-server's, one minor at a
    time and never past it, once the last move has booted; the kubelet.env
    change starts the new-kubelet flow, which links the kubelet image and
    the runtime of that minor."""
    config, paths = ctx.config, ctx.paths
    kube = config.kubernetes
    before = kubeletenv.kubelet_version(kube.kubelet_env)
    api = client(config)
    if api is None:
        raise InputError(f"no kubeconfig at {kube.kubeconfig}: the api-server's version cannot be asked")
    with api:
        server = api.version()
    transfer = sysupdate.owner(paths, KUBERNETES)
    if transfer is not None:
        return _followed(server, before, before, f"the kubelet image is {transfer.describe()}")
    link = paths.extension_link(KUBERNETES)
    linked = sysext.linked_version(link, KUBERNETES)
    booted = SysextBackend(config).booted_image(paths, KUBERNETES, KubeletImageInstalled)
    if linked != booted:
        return _followed(server, before, before, f"the kubelet image {linked} linked in this boot runs from the "
                         f"next boot on ({booted or 'none'} runs now): one minor at a time")
    arch = sysext.arch_of(os_release_from_text(read_text(paths.os_release, "os-release"),
                                               str(paths.os_release)).board)
    sums, _ = signed_sums(ctx, KUBERNETES)
    chosen, reason = skew.choose_kubelet(skew.api_version(server, "the api-server"), offered_versions(sums, arch),
                                         skew.api_version(before, str(kube.kubelet_env)))
    if str(chosen) == before:
        return _followed(server, before, before, reason)
    text = kubeletenv.with_value(kubeletenv.read_env(kube.kubelet_env)[0], kubeletenv.IMAGE_TAG_KEY,
                                 kubeletenv.version_to_tag(str(chosen)))
    write_if_changed(kube.kubelet_env, text)
    log.warning("api-server %s: %s now selects the kubelet %s (was %s; %s); the new-kubelet flow links its image "
                "and the runtime of %s", server, kube.kubelet_env, chosen, before, reason, chosen.minor_text)
    return KubeletFollowed(api_server=server, before=before, after=str(chosen), reason=reason)


def _followed(server: str, before: str, after: str, reason: str) -> KubeletFollowed:
    log.info("api-server %s, kubelet.env selects %s: %s", server, before, reason)
    return KubeletFollowed(api_server=server, before=before, after=after, reason=reason)
