"""Metrics for node-exporter's textfile collector.

Node agents expose their state to Prometheus this way: a ``*.prom`` file in
the collector's directory, replaced whole (a temporary file renamed over it,
which the collector ignores: it reads ``*.prom`` only). Written by a unit of
its own whenever a flow's run record changes (so after every step, and no
step waits for it), from the status (the two verdicts) and the flows' run records (last
run's time, result, duration, bytes downloaded, addons installed), so an
alert can say "the next boot would not run the Docker Kubernetes needs".

The text format of a few gauges is written here rather than by
prometheus_client: about thirty lines of a stable, documented format do
not need a library on the node. The tests read the file back with
prometheus_client's parser.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from .. import config as configuration
from .. import log as logsetup
from ..edges.atomic import remove_stale, write_atomic
from ..errors import TorcxTectonicError
from ..paths import NodePaths
from ..state import RESULTS
from .status import Status, gather

FILE_NAME = "torcx_tectonic.prom"
#: Rewrites in one start at most, while the run records keep changing under it.
MAX_PASSES = 5
#: A pause before the first, so that the burst of changes one step makes starts one rewrite.
SETTLE_SECS = 0.5
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
    image_ok: list[Sample] = []
    image_info: list[Sample] = []
    for image in status.view.images:
        for label, verdict in (("current", image.current), ("next", image.next or image.current)):
            image_ok.append(({"image": image.name, "os": label}, 1 if verdict.ok else 0))
            image_info.append(({"image": image.name, "os": label, "os_version": verdict.os or "",
                                "version": verdict.runtime_version or "",
                                "decided_by": "systemd-sysupdate" if image.managed_by else "torcx-tectonic"}, 1))
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
        *_family("image_verdict_ok", "1 when the OS boots with the image kept beside the runtime (image: kubernetes, "
                 "the kubelet's) that the node's Kubernetes version needs (os: current or next)", image_ok),
        *_family("image_verdict_info", "The version of each image kept beside the runtime each OS boots with, and "
                 "who decides it, as labels", image_info),
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


def _runs_changed(paths: NodePaths) -> int | None:
    """When a run record last changed: each is renamed into the runs
    directory, which changes the directory's time."""
    try:
        return os.stat(paths.runs_dir).st_mtime_ns
    except FileNotFoundError:
        return None


def write_current(config: configuration.Config, paths: NodePaths) -> Path | None:
    """Write the metrics of the node as it is now; again when a run record
    changed meanwhile, since the path unit does not start a unit that is
    still running: the last step of a run would otherwise go unseen."""
    directory = config.metrics.textfile_dir
    if directory is None:
        return None
    remove_stale(directory)  # what a writer killed mid-write left
    path = None
    for _ in range(MAX_PASSES):
        seen = _runs_changed(paths)
        path = write(directory, gather(config, paths, check_hashes=False, units=lambda _: {}))
        if _runs_changed(paths) == seen:
            break
    return path


def main(paths: NodePaths | None = None) -> int:
    """``write-metrics``: 0 when written (or not configured), 1 with one journal line otherwise."""
    logsetup.setup()
    log = logging.getLogger("torcx-tectonic")
    time.sleep(SETTLE_SECS)  # the path unit's further starts meanwhile join this one
    try:
        write_current(configuration.load(), paths or NodePaths())
    except (OSError, TorcxTectonicError) as err:
        log.error("metrics not written: %s", err)
        return 1
    return 0
