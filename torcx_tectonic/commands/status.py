"""The node's answer to "will it boot with the Docker its Kubernetes needs?".

``gather`` reads what is on the node's disk — os-release, kubelet.env, the
runtime mappings, the flows' records and run records — and never the
network, so it works on a fresh node, after a failure, and as a non-root
user where the files are readable. The backend (backend.py) reads its own
part (torcx's stores and profiles, or the linked extension image) and gives
the verdict for the running OS and for the next one: the runtime version
that OS will run when it boots, and whether it is one the Kubernetes
version accepts, or exactly why not.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backend import backend_for
from ..cluster.mappings import kube_minor
from ..cluster.view import local_mappings
from ..config import Config
from ..errors import TorcxTectonicError
from ..flows import ROLLBACK, all_flows, path_units
from ..node import kubeletenv, systemd
from ..node.osrelease import os_release_from_text
from ..paths import NodePaths
from ..state import (
    RUNNING,
    FlowState,
    OsVersions,
    Run,
    RuntimeChoice,
    RuntimePin,
    load_run,
)
from ..verdict import Facts, RuntimeView, Verdict

KIND = "torcx-tectonic-status-v1"


@dataclass(frozen=True)
class FlowStatus:
    flow: str
    run: Run | None
    this_boot: bool

    @property
    def interrupted(self) -> bool:
        """Still "running" from an earlier boot: power was lost or the node rebooted mid-run."""
        return self.run is not None and self.run.result == RUNNING and not self.this_boot


@dataclass(frozen=True)
class Status:
    backend: str
    board: str | None
    current_os: str | None
    next_os: str | None
    next_source: str
    kube_version: str | None
    kube_source: str
    runtime: str
    wanted: tuple[str, ...]
    mapping_source: str
    reset_pending: str | None
    flows: tuple[FlowStatus, ...]
    path_units: dict[str, str]
    current: Verdict
    next: Verdict
    #: the backend's own part: what runs now, what it keeps
    view: RuntimeView
    #: the pin in force as this boot's last run read it, else the key (docs/design.md, 'Pins')
    pin: RuntimePin
    problems: tuple[str, ...] = field(default=())

    @property
    def booted(self) -> str | None:
        return self.view.booted

    @property
    def ok(self) -> bool:
        """Both verdicts, and those of the images kept beside the runtime (the kubelet's)."""
        return self.current.ok and self.next.ok and all(image.ok for image in self.view.images)


# --- gathering the facts ------------------------------------------------------------------------------

def _read_os(paths: NodePaths) -> tuple[str | None, str | None, list[str]]:
    try:
        release = os_release_from_text(paths.os_release.read_text(), str(paths.os_release))
    except (OSError, UnicodeDecodeError) as err:
        return None, None, [f"{paths.os_release}: cannot read: {err}"]
    except TorcxTectonicError as err:
        return None, None, [str(err)]
    return release.board, release.version, []


def _latest(paths: NodePaths, cls: type[OsVersions] | type[RuntimeChoice] | type[RuntimePin],
            flows: Sequence[str]) -> list[object]:
    """This boot's records of ``cls``, the most recent run first."""
    found = []
    for flow in flows:
        state = FlowState(paths, flow)
        try:
            run = state.current()
            found.append((run.started, state.load(cls)))
        except TorcxTectonicError:
            continue
    return [value for _, value in sorted(found, key=lambda pair: pair[0], reverse=True)]


def _next_os(paths: NodePaths, current: str | None, flows: Sequence[str]) -> tuple[str | None, str, bool]:
    """The next OS version, where that came from, and whether it is known."""
    for record in _latest(paths, OsVersions, flows):
        assert isinstance(record, OsVersions)
        if record.current == current:
            if record.next:
                return record.next, f"{record.next_source}, as recorded in this boot", True
            if not paths.update_marker.exists():
                return None, "no OS update pending (recorded in this boot)", True
    if paths.update_marker.exists():
        return None, (f"update_engine applied an update ({paths.update_marker} exists) but no flow has recorded "
                      "its version in this boot"), False
    return None, f"no OS update applied ({paths.update_marker} does not exist)", True


def _kubernetes(config: Config) -> tuple[str | None, str]:
    for path, what in ((config.kubernetes.kubelet_env, "the kubelet's"),
                       (config.kubernetes.installer_kubelet_env, "the installer's (not bootstrapped yet)")):
        if path.exists():
            try:
                version = kubeletenv.kubelet_version(path)
                kube_minor(version)
            except (TorcxTectonicError, OSError, UnicodeDecodeError) as err:
                return None, f"{path}: {err}"
            return version, f"{path} ({what})"
    return None, f"neither {config.kubernetes.kubelet_env} nor {config.kubernetes.installer_kubelet_env} exists"


def _wanted(config: Config, paths: NodePaths, kube_version: str | None, flows: Sequence[str]) -> tuple[
        tuple[str, ...], str]:
    """The runtime versions the Kubernetes version accepts: as this boot's
    runtime step learnt them (from the cluster), else from the node-local mappings."""
    if kube_version is None:
        return (), "no Kubernetes version"
    for record in _latest(paths, RuntimeChoice, flows):
        assert isinstance(record, RuntimeChoice)
        if record.kube_version == kube_version and record.preferred:
            return record.preferred, f"{record.mapping_source}, as recorded in this boot"
    try:
        mappings = local_mappings(config)
        return mappings.versions_for(kube_version, config.torcx.addon), mappings.source
    except (TorcxTectonicError, OSError, UnicodeDecodeError) as err:
        return (), str(err)


def _pin(config: Config, paths: NodePaths, flows: Sequence[str]) -> RuntimePin:
    """The pin this boot's latest runtime step read (the annotation is in
    the cluster, which the status does not ask), else the configuration key."""
    for record in _latest(paths, RuntimePin, flows):
        assert isinstance(record, RuntimePin)
        return record
    if config.runtime.pin:
        return RuntimePin(config.runtime.pin, "[runtime] pin; no run of this boot read the node's annotation")
    return RuntimePin(None, "no pin known ([runtime] pin is not set; no run of this boot read the annotation)")


def pinned(verdict: Verdict, pin: RuntimePin, runtime: str) -> Verdict:
    """A verdict with the pin: an OS that would run another version than
    the pinned one is not ok, whatever the mappings accept; a verdict that
    is not ok says first that the node is pinned (a pin the next OS cannot
    satisfy is why its runtime step failed)."""
    if pin.version is None or verdict.os is None:
        return verdict
    if verdict.ok and verdict.runtime_version == pin.version:
        return dataclasses.replace(verdict, notes=(*verdict.notes, f"pinned to {pin.version} ({pin.source})"))
    return dataclasses.replace(verdict, ok=False, reason=f"{runtime} is pinned to {pin.version} ({pin.source}); OS "
                               f"{verdict.os} would run {verdict.runtime_version or 'no known version'}: "
                               f"{verdict.reason}")


def _reset_pending(paths: NodePaths) -> str | None:
    try:
        document = json.loads(paths.docker_reset_marker.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"{paths.docker_reset_marker} exists (unreadable)"
    if isinstance(document, dict):
        return f"{document.get('from')} → {document.get('to')}"
    return f"{paths.docker_reset_marker} exists"


def gather(config: Config, paths: NodePaths | None = None, *, check_hashes: bool = True,
           units: Callable[[Sequence[str]], dict[str, str]] = systemd.unit_states) -> Status:
    """Everything the status shows, read from the node's disk."""
    paths = paths or NodePaths()
    backend = backend_for(config)
    flow_names = [f.name for f in all_flows(config)]
    board, current, problems = _read_os(paths)
    next_os, next_source, next_known = _next_os(paths, current, flow_names)
    kube_version, kube_source = _kubernetes(config)
    wanted, mapping_source = _wanted(config, paths, kube_version, flow_names)
    facts = Facts(runtime=backend.runtime, board=board, current_os=current, next_os=next_os,
                  kube_version=kube_version, wanted=tuple(wanted), mapping_source=mapping_source,
                  reset_pending=_reset_pending(paths))
    view = backend.view(paths, facts, check_hashes=check_hashes)
    pin = _pin(config, paths, flow_names)
    view = dataclasses.replace(view, current=pinned(view.current, pin, backend.runtime),
                               next=view.next and pinned(view.next, pin, backend.runtime))
    return _status(config, paths, units, [*flow_names, ROLLBACK], [*problems, *view.problems], board=board,
                   current_os=current, next_os=next_os, next_source=next_source, kube_version=kube_version,
                   kube_source=kube_source,
                   runtime=backend.runtime, wanted=tuple(wanted), mapping_source=mapping_source,
                   reset_pending=facts.reset_pending, view=view, current=view.current, pin=pin,
                   next=_next_verdict(view.current, view.next, current, next_os, next_source, next_known))


def _next_verdict(current_verdict: Verdict, next_view: Verdict | None, current: str | None, next_os: str | None,
                  next_source: str, next_known: bool) -> Verdict:
    """The next boot's verdict: the next OS's, the running OS's again, or unknown."""
    if next_os is not None and next_view is not None:
        return next_view
    if next_known:
        return dataclasses.replace(current_verdict, notes=(f"no OS update pending: the next boot runs OS {current} "
                                                           "again",))
    return Verdict(None, False, None, next_source)


def _status(config: Config, paths: NodePaths, units: Callable[[Sequence[str]], dict[str, str]],
            flow_names: Sequence[str], problems: list[str], **facts: Any) -> Status:
    """The status, with each flow's last run and the path units."""
    flows = []
    for name in flow_names:
        try:
            run = load_run(paths, name)
        except TorcxTectonicError as err:
            problems.append(str(err))
            run = None
        flows.append(FlowStatus(name, run, FlowState(paths, name).this_boot(run)))
    return Status(backend=config.runtime.backend, flows=tuple(flows), path_units=units(path_units(config)),
                  problems=tuple(problems), **facts)
