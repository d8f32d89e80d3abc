"""Step: empty /var/lib/docker at the boot where a different Docker starts.

The shipped unit runs before docker.service and containerd.service, only
while the marker that the runtime steps leave exists (node.dockerdata).
"""

from __future__ import annotations

import logging

from ..backend import backend_for
from ..node.dockerdata import reset
from ..state import DockerReset
from .context import Context

log = logging.getLogger(__name__)


def reset_step(ctx: Context) -> DockerReset:
    """Step: empty Docker's data at the boot where a different Docker starts
    (this step runs before Docker does: the backend knows which one booted)."""
    paths = ctx.paths
    booted = backend_for(ctx.config).booted(paths)
    removed = reset(paths.docker_reset_marker, paths.docker_data, booted)
    log.info("emptied %s (%d entries)", paths.docker_data, len(removed))
    return DockerReset(removed=tuple(removed), booted=booted)
