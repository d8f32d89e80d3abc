"""``torcx-tectonic-status``: what the flows found, chose and changed.

Reads the facts the steps recorded in /run/torcx-tectonic and prints them
for an operator, one block per step, most recent last.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

from .facts import all_facts
from .paths import STATE_DIR

SKIP = ("flow", "step", "result", "time")


def render(documents: list[dict[str, Any]]) -> str:
    if not documents:
        return "torcx-tectonic: no step has run in this boot\n"
    out = []
    for doc in documents:
        when = datetime.datetime.fromtimestamp(doc.get("time", 0)).strftime("%Y-%m-%d %H:%M:%S")
        mark = "ok" if doc.get("result") == "ok" else "FAILED"
        out.append(f"{when} {doc.get('flow')}/{doc.get('step')}: {mark}")
        for key in sorted(k for k in doc if k not in SKIP):
            out.append(f"    {key}: {json.dumps(doc[key])}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else STATE_DIR
    documents = all_facts(root)
    sys.stdout.write(render(documents))
    return 1 if any(d.get("result") != "ok" for d in documents) else 0
