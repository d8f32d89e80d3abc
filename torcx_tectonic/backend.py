"""The runtime backends, as the rest of the program asks them.

Each backend is a row of the flow table (its steps; flows.RUNTIME_BACKENDS)
and an implementation of ``Backend`` (what it reads and writes on the node):
the Docker reset, the clean-up after a killed step and the status ask it
instead of comparing names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .config import Config
from .flows import runtime_backend
from .paths import NodePaths
from .state import RolledBack, RuntimeChange
from .sysext.backend import SysextBackend
from .torcx.backend import TorcxBackend
from .verdict import Facts, RuntimeView


class Backend(Protocol):
    """What every backend answers."""

    #: the runtime it keeps in step (what the runtime mappings name)
    runtime: str

    def booted(self, paths: NodePaths) -> str | None:
        """The runtime version this boot runs (None: not known, or the OS's own)."""

    def leftovers(self, paths: NodePaths) -> list[Path]:
        """Remove what an interrupted step of it left beyond temporary files."""

    def view(self, paths: NodePaths, facts: Facts, *, check_hashes: bool = True) -> RuntimeView:
        """The verdicts for the running and the next OS, and what it keeps."""

    def roll_back(self, paths: NodePaths, facts: Facts, change: RuntimeChange) -> RolledBack:
        """Put back ``change.previous`` for the running and the next OS, with
        the Docker reset rule of a forward change; NothingToRollBack, with
        nothing changed, when it is selected already or no longer kept."""


IMPLEMENTATIONS: dict[str, Callable[[Config], Backend]] = {"torcx": TorcxBackend, "sysext": SysextBackend}


def backend_for(config: Config) -> Backend:
    return IMPLEMENTATIONS[runtime_backend(config).name](config)
