"""Switching an image systemd-sysext merges (the runtime's, the kubelet's):
the link, the Docker reset marker before it when Docker changes, Flatcar's
own image masked, a merge at once if configured. The install steps switch
forward to the chosen image, a rollback back to a kept one, by the same rule
(docs/design.md, 'Docker changes and downgrades').
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import Config
from ..node import dockerdata, systemd
from ..paths import NodePaths
from . import images as sysext

log = logging.getLogger(__name__)

#: The runtime whose data a version change empties.
DOCKER = "docker"
#: The reset marker's "from" for Flatcar's own Docker image (it has no version of ours).
FLATCAR_DOCKER = "flatcar"
#: Restarting these merges the images anew (Flatcar's way on systemd 252: not `systemd-sysext refresh`).
REFRESH_UNITS = ("systemd-sysext.service", "ensure-sysext.service")


def changed_from(linked: str | None, version: str, pending: tuple[str | None, str] | None) -> str | None:
    """The runtime version the node changes from (None: Flatcar's own). The
    link's, unless it names ``version`` already but the Docker reset marker
    says that change has not booted yet (a run killed after the link changed,
    or a second run before the reboot): the marker knows where Docker comes from."""
    if linked == version and pending is not None and pending[1] == version:
        return None if pending[0] in (None, FLATCAR_DOCKER) else pending[0]
    return linked


def linked_before(paths: NodePaths, name: str, arch: str, version: str) -> str | None:
    """The version of image ``name`` a switch to ``version`` changes from
    (``changed_from`` of what its link names now and, for Docker, the pending
    Docker reset)."""
    linked = sysext.linked_image(paths.extension_link(name))
    return changed_from(sysext.version_of(linked, name, arch) if linked else None, version,
                        dockerdata.pending(paths.docker_reset_marker) if name == DOCKER else None)


def switch(config: Config, paths: NodePaths, name: str, image: Path, version: str, previous: str | None, *,
           mask_builtin: bool) -> tuple[bool, str]:
    """Link ``image`` as image ``name`` for systemd-sysext (the Docker reset
    marker first, when Docker changes), mask Flatcar's own image of that name
    if asked, merge at once if configured. Returns whether the link changed
    and when the image is merged."""
    # The reset marker first: once the link names the new image, a run after a crash finds it linked and would
    # no longer know that Docker changes.
    if previous != version and name == DOCKER and dockerdata.arrange(
            paths.docker_reset_marker, previous or FLATCAR_DOCKER, version):
        log.warning("docker changes from %s to %s: %s will be emptied before it starts", previous or "Flatcar's",
                    version, paths.docker_data)
    changed = sysext.link(paths.extension_link(name), paths.on_node(image))
    if mask_builtin and sysext.link(paths.extension_link(name + sysext.BUILTIN_SUFFIX), "/dev/null"):
        log.info("masked Flatcar's own %s image", name)
    if not (changed and config.sysext.activate == "refresh"):
        return changed, sysext.MERGED_AT_NEXT_BOOT
    for unit in REFRESH_UNITS:
        systemd.restart(unit)
    return changed, sysext.MERGED_NOW
