"""What every step function is handed."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..cluster.view import Cluster
from ..config import Config
from ..flows import Flow, Step
from ..paths import NodePaths
from ..state import ApiServerUnreachable, FlowState, StateError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What every step gets: the configuration, the node, and its flow's run."""

    config: Config
    paths: NodePaths
    state: FlowState
    flow: Flow
    step: Step

    def cluster(self) -> Cluster:
        """The cluster as this step sees it, knowing what its run learnt of the api-server."""
        return Cluster(self.config, in_run=True, known=self.state.fact(ApiServerUnreachable), step=self.step.name)

    def remember(self, cluster: Cluster) -> None:
        """Keep for the later steps of the run that the api-server is
        unreachable, when this step found so."""
        if cluster.unreachable is None:
            return
        try:
            self.state.save(cluster.unreachable)
        except (StateError, OSError) as failed:
            log.warning("cannot keep for the later steps that the api-server is unreachable: %s", failed)
