"""Step: tell the update operator that this node may reboot.

The operator deletes every before-reboot hook annotation when it sets the
before-reboot label, so an annotation written earlier would be lost and the
node would wait forever: the step waits for the label (polling with
backoff), then annotates.
"""

from __future__ import annotations

import logging
import time

from ..cluster.view import client
from ..errors import InputError, TorcxTectonicError
from ..state import RECORDS, NodeAnnotated
from . import lock
from .context import Context

log = logging.getLogger(__name__)


def annotate(ctx: Context, *, after: str) -> NodeAnnotated:
    """``after`` names the record of the step that put the next OS's runtime in place."""
    kube = ctx.config.kubernetes
    ctx.state.load(RECORDS[after])  # only once the next OS has its runtime
    prefix = kube.annotation.rpartition("/")[0]
    label = f"{prefix}/before-reboot"
    api = client(ctx.config)
    if api is None:
        raise InputError(f"no kubeconfig at {kube.kubeconfig}: cannot annotate node {kube.node_name}")
    with api:
        deadline = time.monotonic() + kube.label_timeout
        pause = 1.0
        while True:
            labels = (api.node(kube.node_name).get("metadata") or {}).get("labels") or {}
            if labels.get(label) == "true":
                break
            if time.monotonic() + pause > deadline:
                raise TorcxTectonicError(f"node {kube.node_name} did not get the label {label}=true within "
                                         f"{kube.label_timeout:.0f}s")
            log.info("waiting for the update operator to label node %s %s=true", kube.node_name, label)
            time.sleep(pause)
            pause = min(pause * 2, kube.label_poll_max_interval)
        with lock.held(ctx.paths.lock_file):  # not while another flow is half done (the reboot may follow at once)
            api.annotate_node(kube.node_name, {kube.annotation: "true"})
    log.info("node %s annotated %s=true", kube.node_name, kube.annotation)
    return NodeAnnotated(node=kube.node_name, annotation=kube.annotation, label=label)
