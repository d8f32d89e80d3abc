"""Helpers for driving the product's flows inside a test node."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from simnode.node import REBOOT_EXIT_CODE, Node

BOOTSTRAP_UNITS = ("os-update", "kubelet-version", "docker-version", "addons", "kubelet-env", "finish")


def start_bootstrap_expecting_reboot(node: Node, timeout: float = 120) -> int:
    """Start the bootstrap without waiting on it (the reboot ends the
    container) and return nspawn's exit code."""
    node.systemctl("start", "--no-block", "torcx-bootstrap.target")
    return node.wait_exit(timeout)


def start_bootstrap(node: Node, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`systemctl start torcx-bootstrap.target`, as an operator types it."""
    return node.systemctl("start", "torcx-bootstrap.target", check=False, timeout=timeout)


def facts(node: Node, flow: str, script: str) -> dict[str, Any]:
    return dict(json.loads(node.read(f"/run/torcx-tectonic/{flow}/{script}.json")))


def unit_result(node: Node, unit: str) -> tuple[str, str]:
    """(ActiveState, Result) of a unit."""
    out = node.systemctl("show", "-p", "ActiveState", "-p", "Result", unit).stdout
    values = dict(line.split("=", 1) for line in out.strip().splitlines())
    return values["ActiveState"], values.get("Result", "")  # targets have no Result


def bootstrap_journal(node: Node) -> str:
    extra = []
    for name in BOOTSTRAP_UNITS:
        extra += ["-t", f"torcx-bootstrap-{name}"]
    return node.journal(extra=extra)


__all__ = ["REBOOT_EXIT_CODE", "bootstrap_journal", "facts", "start_bootstrap", "start_bootstrap_expecting_reboot",
           "unit_result"]
