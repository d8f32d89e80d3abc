"""Step: empty /var/lib/docker at the boot where a different Docker starts.

The shipped unit runs before docker.service and containerd.service, only
while the marker that the runtime steps leave exists (node.dockerdata).
"""

from __future__ import annotations

import logging

from ..node.dockerdata import reset
from ..state import DockerReset
from ..sysext import images as sysext
from ..torcx import profile
from .context import Context

log = logging.getLogger(__name__)


def reset_step(ctx: Context) -> DockerReset:
    """Step: empty Docker's data at the boot where a different Docker starts."""
    paths = ctx.paths
    if ctx.config.runtime.backend == "sysext":
        # systemd-sysext merged, at this boot, the image the link names; this step runs before Docker starts
        booted = sysext.linked_version(paths.extension_link(ctx.config.sysext.runtime),
                                       ctx.config.sysext.runtime)
    else:
        booted = profile.booted_reference(paths.torcx_metadata, ctx.config.torcx.addon)
    removed = reset(paths.docker_reset_marker, paths.docker_data, booted)
    log.info("emptied %s (%d entries)", paths.docker_data, len(removed))
    return DockerReset(removed=tuple(removed), booted=booted)
