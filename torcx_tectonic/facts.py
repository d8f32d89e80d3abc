"""Recorded facts: what each step found, chose and changed.

Each step writes one JSON document under ``/run/torcx-tectonic/<flow>/``,
atomically; later steps read their inputs from there and ``torcx-tectonic
status`` shows them to the operator. /run is the right place: facts are
about this boot.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .errors import TorcxTectonicError
from .paths import STATE_DIR


class Facts:
    def __init__(self, flow: str, root: Path = STATE_DIR) -> None:
        self.root = root
        self.dir = root / flow
        self.flow = flow

    def path(self, step: str) -> Path:
        return self.dir / f"{step}.json"

    def record(self, step: str, result: str, **facts: Any) -> None:
        document = {"flow": self.flow, "step": step, "result": result, "time": time.time(), **facts}
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        write_atomic(self.path(step), json.dumps(document, indent=2, sort_keys=True) + "\n")

    def load(self, step: str) -> dict[str, Any]:
        """The facts of an earlier step; it must have succeeded."""
        try:
            document = json.loads(self.path(step).read_text())
        except FileNotFoundError:
            raise TorcxTectonicError(
                f"step {self.flow}/{step} has not run in this boot ({self.path(step)} missing)"
            ) from None
        if document.get("result") != "ok":
            raise TorcxTectonicError(f"step {self.flow}/{step} did not succeed: {document.get('error', 'unknown')}")
        return dict(document)

    def blob_path(self, name: str) -> Path:
        return self.dir / name

    def clear(self) -> None:
        if self.dir.is_dir():
            for entry in self.dir.iterdir():
                if entry.is_file():
                    entry.unlink()


def all_facts(root: Path = STATE_DIR) -> list[dict[str, Any]]:
    found = []
    if root.is_dir():
        for path in sorted(root.glob("*/*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
    return sorted(found, key=lambda d: d.get("time", 0))
