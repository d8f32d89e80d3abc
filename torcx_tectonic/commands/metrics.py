"""Metrics for node-exporter's textfile collector.

Node agents expose their state to Prometheus this way: a ``*.prom`` file in
the collector's directory, replaced whole (a temporary file renamed over it,
which the collector ignores: it reads ``*.prom`` only). Written after every
step, from the status (the two verdicts) and the flows' run records (last
run's time, result, duration, bytes downloaded, addons installed), so an
alert can say "the next boot would not run the Docker Kubernetes needs".

The text format of a few gauges is written here rather than by
prometheus_client, whose import every step would pay for about thirty lines
of a stable, documented format. The tests read the file back with
prometheus_client's parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..edges.atomic import write_atomic
from ..state import RESULTS
from .status import Status

FILE_NAME = "torcx_tectonic.prom"
PREFIX = "torcx_tectonic"

Sample = tuple[Mapping[str, str], float]


def _label(value: str) -> str:
    """A label value as the text format quotes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, help_text: str, samples: list[Sample]) -> list[str]:
    """A gauge's HELP and TYPE lines and its samples."""
    full = f"{PREFIX}_{name}"
    lines = [f"# HELP {full} {help_text.replace(chr(92), chr(92) * 2)}", f"# TYPE {full} gauge"]
    for labels, value in samples:
        pairs = ",".join(f'{key}="{_label(text)}"' for key, text in labels.items())
        lines.append(f"{full}{{{pairs}}} {float(value)!r}")
    return lines


def render(status: Status) -> bytes:
    """The textfile for this status, in the Prometheus text format."""
    ok: list[Sample] = []
    info: list[Sample] = []
    for label, verdict in (("current", status.current), ("next", status.next)):
        ok.append(({"os": label}, 1 if verdict.ok else 0))
        info.append(({"os": label, "os_version": verdict.os or "", "runtime": status.runtime,
                      "runtime_version": verdict.runtime_version or ""}, 1))
    started: list[Sample] = []
    finished: list[Sample] = []
    duration: list[Sample] = []
    result: list[Sample] = []
    downloaded: list[Sample] = []
    installed: list[Sample] = []
    for flow in status.flows:
        run = flow.run
        if run is None:
            continue
        labels = {"flow": flow.flow}
        started.append((labels, run.started))
        if run.finished is not None and run.duration is not None:
            finished.append((labels, run.finished))
            duration.append((labels, run.duration))
        current = "interrupted" if flow.interrupted else run.result
        result += [({"flow": flow.flow, "result": name}, 1 if name == current else 0)
                   for name in (*RESULTS, "interrupted")]
        downloaded.append((labels, run.counters.get("downloaded_bytes", 0)))
        installed.append((labels, run.counters.get("addons_installed", 0)))
    lines = [
        *_family("verdict_ok", "1 when the OS boots with a runtime version its Kubernetes accepts (os: current or "
                 "next)", ok),
        *_family("verdict_info", "The runtime version each OS boots with, as labels", info),
        *_family("last_run_start_timestamp_seconds", "When the flow's last run began", started),
        *_family("last_run_end_timestamp_seconds", "When the flow's last run ended (absent while it runs)", finished),
        *_family("last_run_duration_seconds", "How long the flow's last run took", duration),
        *_family("last_run_result", "1 for the result of the flow's last run", result),
        *_family("last_run_downloaded_bytes", "Bytes the flow's last run downloaded", downloaded),
        *_family("last_run_addons_installed", "Addons or images the flow's last run put in place", installed),
    ]
    return ("\n".join(lines) + "\n").encode()


def write(directory: Path, status: Status) -> Path:
    """Replace the textfile in ``directory`` atomically."""
    path = directory / FILE_NAME
    write_atomic(path, render(status))
    return path
