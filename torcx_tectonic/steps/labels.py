"""Step: write the node's answer on its own Node object.

It runs after every run of the other flows and at boot (the runtime that
runs changes only at a boot), as its own small flow that nothing waits for:
an api-server that is down fails only this step, quickly (it gives up on a
connection it cannot make), and the next run catches up. What it writes is
``cluster.labels``' pure function of the verdicts ``torcx-tectonic status``
computes from the node's disk.
"""

from __future__ import annotations

import logging

from ..cluster import labels
from ..commands.status import Status, gather
from ..errors import InputError
from ..state import NodeLabelled
from .context import Context

log = logging.getLogger(__name__)


def metadata(status: Status) -> labels.NodeMetadata:
    """The labels of the node's answer: the runtime version running now, as
    its backend knows it (what torcx applied, what systemd-sysext merged),
    and the next boot's verdict."""
    return labels.node_metadata(runtime=status.runtime, running=status.booted, next_ok=status.next.ok,
                                reason=status.next.reason)


def label_node(ctx: Context) -> NodeLabelled:
    name = ctx.config.kubernetes.node_name
    wanted = metadata(gather(ctx.config, ctx.paths, check_hashes=False, units=lambda _: {}))
    api = ctx.cluster().client()
    if api is None:
        raise InputError(f"no kubeconfig at {ctx.config.kubernetes.kubeconfig}: cannot label node {name}")
    with api:
        api.patch_node(name, wanted.patch(), f"label node {name}")
    log.info("node %s labelled %s", name, ", ".join(f"{k}={v}" for k, v in wanted.labels.items()))
    return NodeLabelled(node=name, labels=dict(wanted.labels), annotations=dict(wanted.annotations))
