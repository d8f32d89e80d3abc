"""An hour of a bucket that lacks the next OS's addon, on one simulated node, with time scaled down.

A bootstrapped node gets an OS update whose manifest offers only a Docker
version its Kubernetes does not accept, so every new-OS run fails at its
Docker step, for as long as the update waits. Every duration the product
waits for (the network steps' retry pauses, the backoff between runs) is
divided by ``scale``, so ``3600 / scale`` real seconds play one hour; the
node, its systemd, the path unit, the retry unit and the bucket are real.
`make bench` prints the figures (simnode/bench.py) and an integration test
asserts their bound and what follows (tests/integration/test_backoff.py).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from torcx_tectonic import config as configuration
from torcx_tectonic.steps import backoff as policy

from .cluster import BOARD, CLUO_PREFIX, NODE_NAME, Cluster, Release, ini
from .node import Node

CURRENT, NEXT = "1632.3.0", "1688.5.3"
HOUR_SECS = 3600.0
#: The bucket lacks the next OS's Docker 17.03: its manifest offers 1.12 only.
RELEASES = [Release(CURRENT, ["17.03"]), Release(NEXT, ["1.12"])]
MAPPINGS = {"1.8": ["17.03"]}
#: The defaults this scales: the network steps' retries, and the backoff between runs.
DEFAULTS = {"retry_delay": 30.0, "backoff_delay": 600.0, "backoff_max_delay": 7200.0}
#: One line per run: the runner's last word when the Docker step gives up (not "failed (attempt").
RUN_FAILED = re.compile(r"^(\d+\.\d+) .* new-os/docker-version failed: ", re.MULTILINE)
RUN_BEGAN = re.compile(r"^(\d+\.\d+) .* new-os/docker-version failed \(attempt 1 of", re.MULTILINE)


def scaled(scale: float, *, backoff: bool = True) -> dict[str, dict[str, str]]:
    """The default settings with every wait divided by ``scale``; without
    ``backoff`` the pause between runs is next to nothing (the old storm)."""
    units = {key: f"{value / scale:g}" for key, value in DEFAULTS.items()}
    if not backoff:
        units.update(backoff_delay="0.001", backoff_max_delay="0.001")
    return {"units": {**units, "retry_attempts": "5"}}


def most_runs(scale: float) -> int:
    """The most runs the backoff policy lets begin in the scaled hour: each
    run takes at least its retry pauses, and each pause after it at least
    half its delay."""
    units = configuration.build(configuration.collect([("scaled", ini(scaled(scale)))])).units
    shortest_run = configuration.total_retry_delay(units)
    now, runs = 0.0, 0
    while now <= HOUR_SECS / scale:
        runs += 1
        now += shortest_run + policy.pause(runs, units, rand=lambda: 0.0)
    return runs


@dataclass(frozen=True)
class Hour:
    """What one node did in the scaled hour."""

    scale: float
    runs: int
    #: GETs of the next OS's manifest (each attempt of a run fetches it once)
    manifest_gets: int
    #: every request to the bucket
    requests: int
    #: seconds between the end of a run and the start of the next, in real (scaled) seconds
    pauses: tuple[float, ...]

    @property
    def window(self) -> float:
        return HOUR_SECS / self.scale


def _times(pattern: re.Pattern[str], journal: str) -> list[float]:
    return [float(stamp) for stamp in pattern.findall(journal)]


@contextlib.contextmanager
def failing_hour(bundle: Path, workdir: Path, *, scale: float = 60.0,
                 backoff: bool = True) -> Iterator[tuple[Cluster, Node, Hour]]:
    """Boot the node, apply the update, let the scaled hour pass; yields the
    cluster and the node still running (a test goes on from there) and the
    figures of the hour."""
    with Cluster(workdir, RELEASES, mappings=MAPPINGS) as cluster:
        # the operator already picked the node: a run that gets the addon annotates at once
        cluster.api.update_node_metadata(NODE_NAME, set_labels={f"{CLUO_PREFIX}/before-reboot": "true"},
                                         source="operator")
        files = {**cluster.node_files(scaled(scale, backoff=backoff)), **cluster.bootstrapped_files(CURRENT)}
        with Node(bundle=bundle, os_version=CURRENT, files=files) as node:
            node.boot()
            cluster.bucket.log.clear()
            began = time.time()
            node.set_update_engine({"mode": "update", "new_version": NEXT, "step_seconds": 0.05})
            node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
                     "AttemptUpdate")
            time.sleep(max(0.0, began + HOUR_SECS / scale - time.time()))
            ended = time.time()
            journal = node.journal("torcx-new-os-docker-version.service", extra=["-o", "short-unix"])
            starts = [t for t in _times(RUN_BEGAN, journal) if began <= t <= ended]
            ends = [t for t in _times(RUN_FAILED, journal) if began <= t <= ended]
            requests = [r for r in cluster.bucket.log.all() if began <= r.time <= ended]
            manifest = f"/manifests/{BOARD}/{NEXT}/torcx_manifest.json"
            hour = Hour(scale=scale, runs=len(starts), manifest_gets=sum(1 for r in requests if r.url_path == manifest),
                        requests=len(requests), pauses=tuple(b - a for a, b in zip(ends, starts[1:])))
            yield cluster, node, hour


def fix_bucket(cluster: Cluster) -> None:
    """The next OS's manifest now offers the Docker the cluster accepts."""
    cluster.bucket.add_release(BOARD, NEXT, ["1.12", "17.03"], None)
