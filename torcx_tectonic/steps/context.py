"""What every step function is handed."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..flows import Flow, Step
from ..paths import NodePaths
from ..state import FlowState


@dataclass(frozen=True)
class Context:
    """What every step gets: the configuration, the node, and its flow's run."""

    config: Config
    paths: NodePaths
    state: FlowState
    flow: Flow
    step: Step
