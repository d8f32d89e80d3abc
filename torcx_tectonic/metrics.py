"""Metrics for node-exporter's textfile collector.

Node agents expose their state to Prometheus this way: a ``*.prom`` file in
the collector's directory, replaced whole (prometheus_client writes a
temporary file and renames it). Written when a flow's run ends, from the status
(the two verdicts) and the flows' run records (last run's time, result,
duration, bytes downloaded, addons installed), so an alert can say "the
next boot would not run the Docker Kubernetes needs".
"""

from __future__ import annotations

import logging
from pathlib import Path

from .state import RESULTS
from .status import Status

log = logging.getLogger(__name__)

FILE_NAME = "torcx_tectonic.prom"
PREFIX = "torcx_tectonic"


def render(status: Status) -> bytes:
    """The textfile for this status, in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, labels: tuple[str, ...]) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", help_text, labels, registry=registry)

    ok = gauge("verdict_ok", "1 when the OS boots with a runtime version its Kubernetes accepts (os: current or "
               "next)", ("os",))
    info = gauge("verdict_info", "The runtime version each OS boots with, as labels", ("os", "os_version",
                                                                                        "runtime", "runtime_version"))
    for label, verdict in (("current", status.current), ("next", status.next)):
        ok.labels(label).set(1 if verdict.ok else 0)
        info.labels(label, verdict.os or "", status.runtime, verdict.runtime_version or "").set(1)
    started = gauge("last_run_start_timestamp_seconds", "When the flow's last run began", ("flow",))
    finished = gauge("last_run_end_timestamp_seconds", "When the flow's last run ended (absent while it runs)",
                     ("flow",))
    duration = gauge("last_run_duration_seconds", "How long the flow's last run took", ("flow",))
    result = gauge("last_run_result", "1 for the result of the flow's last run", ("flow", "result"))
    downloaded = gauge("last_run_downloaded_bytes", "Bytes of addons the flow's last run downloaded", ("flow",))
    installed = gauge("last_run_addons_installed", "Addons the flow's last run put into a store", ("flow",))
    for flow in status.flows:
        run = flow.run
        if run is None:
            continue
        started.labels(flow.flow).set(run.started)
        if run.finished is not None and run.duration is not None:
            finished.labels(flow.flow).set(run.finished)
            duration.labels(flow.flow).set(run.duration)
        current = "interrupted" if flow.interrupted else run.result
        for name in (*RESULTS, "interrupted"):
            result.labels(flow.flow, name).set(1 if name == current else 0)
        downloaded.labels(flow.flow).set(run.counters.get("downloaded_bytes", 0))
        installed.labels(flow.flow).set(run.counters.get("addons_installed", 0))
    return bytes(generate_latest(registry))


def write(directory: Path, status: Status) -> Path:
    """Replace the textfile in ``directory`` atomically."""
    from .atomic import write_atomic

    path = directory / FILE_NAME
    write_atomic(path, render(status))
    return path
