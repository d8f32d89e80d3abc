"""Helpers for driving the product's flows inside a test node."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from simnode.cluster import BOARD, Cluster
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


def last_run(node: Node, flow: str) -> dict[str, Any]:
    """The flow's run record (kept across boots)."""
    return dict(json.loads(node.read(f"/var/lib/torcx-tectonic/runs/{flow}.json")))


def run_result(node: Node, flow: str) -> str | None:
    """The result of the flow's last run, None when it never ran."""
    return last_run(node, flow)["result"] if node.exists(f"/var/lib/torcx-tectonic/runs/{flow}.json") else None


def record(node: Node, flow: str, name: str) -> dict[str, Any]:
    """A step's typed output in this boot's run of the flow."""
    document = json.loads(node.read(f"/run/torcx-tectonic/{flow}/{name}.json"))
    assert document["run"] == last_run(node, flow)["id"], "a record of an earlier run"
    return dict(document["value"])


def settled_record(node: Node, flow: str, name: str) -> dict[str, Any] | None:
    """A step's output in the flow's current run, or None while there is none
    (for conditions polled while runs begin and end)."""
    try:
        document = json.loads(node.read(f"/run/torcx-tectonic/{flow}/{name}.json"))
        run = last_run(node, flow)
    except FileNotFoundError:
        return None
    return dict(document["value"]) if document["run"] == run["id"] else None


def step_done(node: Node, flow: str, step: str) -> bool:
    """Whether ``step`` succeeded in the flow's last run."""
    if run_result(node, flow) is None:
        return False
    return any(s["step"] == step and s["result"] == "ok" for s in last_run(node, flow)["steps"])


def step_run(node: Node, flow: str, step: str) -> dict[str, Any]:
    """The run record's entry of ``step`` (its result, start and end)."""
    return dict(next(s for s in last_run(node, flow)["steps"] if s["step"] == step))


def has_record(node: Node, flow: str, name: str) -> bool:
    return node.exists(f"/run/torcx-tectonic/{flow}/{name}.json")


def failure(node: Node, flow: str, step: str) -> str:
    """The message of the step that ended the flow's last run in failure."""
    run = last_run(node, flow)
    assert (run["result"], run["failed_step"]) == ("failed", step), run
    return str(run["failure"])


def status(node: Node) -> tuple[int, dict[str, Any]]:
    """`torcx-tectonic status --json` on the node: its exit status and document."""
    result = node.run("torcx-tectonic", "status", "--json", check=False)
    return result.returncode, dict(json.loads(result.stdout))


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


def assert_no_python(node: Node) -> None:
    found = node.run("sh", "-c", "command -v python3 python3.11 python; ls -d /usr/lib/python3* "
                     "/usr/local/lib/python3* /usr/lib/*-linux-gnu/libpython3* 2>/dev/null; true").stdout
    assert found == "", f"the node has Python: {found}"


def assert_bootstrapped(cluster: Cluster, node: Node, os_versions: tuple[str, ...]) -> None:
    """What a finished bootstrap leaves, as on a packaged node."""
    for os_version in os_versions:
        addon = node.host_path(f"/var/lib/torcx/store/{os_version}/docker:17.03.torcx.tgz")
        assert addon.is_file(), f"no addon for OS {os_version}"
        assert hashlib.sha512(addon.read_bytes()).hexdigest() == cluster.bucket.expected_sha512(
            BOARD, os_version, "17.03")
    assert node.host_path("/etc/torcx/next-profile").read_text().strip() == "tectonic"
    assert "KUBELET_IMAGE_TAG=v1.8.4_coreos.0" in node.host_path("/etc/kubernetes/kubelet.env").read_text()


__all__ = ["REBOOT_EXIT_CODE", "assert_bootstrapped", "assert_no_python", "bootstrap_journal", "failure",
           "has_record", "last_run", "record", "run_result", "settled_record", "start_bootstrap",
           "start_bootstrap_expecting_reboot", "status", "step_done", "step_run", "unit_result"]


#: The real kubectl (make deps installs Debian's kubernetes-client where no kubectl is).
KUBECTL = shutil.which("kubectl")


def kubectl(cluster: Cluster, tmp_path: Path, *args: str) -> str:
    """The real kubectl against the stand-in, as a cluster admin (the bearer token)."""
    assert KUBECTL is not None
    config = cluster.api.kubeconfig(tmp_path / "admin.kubeconfig", kind="token")
    result = subprocess.run([KUBECTL, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "kube-cache"),
                             *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout
