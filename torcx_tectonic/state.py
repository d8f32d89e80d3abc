"""The on-disk state of flow runs: typed records, the run record, the cache.

What one step hands the next is a frozen, typed record with a versioned
kind, never a loosely shaped map read back by file name:

- ``/run/torcx-tectonic/<flow>/<record>.json``: the records of this boot's
  run of a flow, each tagged with the run's id, so a record an earlier run
  left is never taken for this run's. The directory exists once a run of
  the flow began in this boot, and its ``run`` file names that run: /run is
  empty at every boot, so a run record whose id is not there is from an
  earlier boot.
- ``/var/lib/torcx-tectonic/runs/<flow>.json``: the flow's run record (when
  it started and ended, how, which steps ran, why it failed), kept across
  boots so the status can say what a run that ended in a reboot did.
- ``/var/cache/torcx-tectonic/manifests/``: verified manifests, apart from
  the records; a record names the digest of the one it used.
- ``/var/lib/torcx-tectonic/runtime-change.json``: the last change of the
  runtime version, kept across boots (``RuntimeChange``): what a rollback
  puts back.

Loading a document of another kind or version, or one that is not ours, is a
StateError naming the file and what was expected, never a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .edges.atomic import fsync_dir, write_atomic, write_if_changed
from .errors import TorcxTectonicError
from .paths import NodePaths, flow_state_dir

KIND_PREFIX = "torcx-tectonic."
#: Run results.
RUNNING, OK, FAILED, REBOOTING = "running", "ok", "failed", "rebooting"
RESULTS = (RUNNING, OK, FAILED, REBOOTING)
#: The largest state document read back (they are a few KiB).
MAX_DOCUMENT_BYTES = 1 << 20


class StateError(TorcxTectonicError):
    """A state document is missing, from another run, or not what this
    version of torcx-tectonic writes."""


# --- the typed, versioned documents -------------------------------------------------------------

class Record:
    """A step's output. ``NAME`` is its file name in the run's directory,
    ``KIND`` its versioned kind: change the kind when the fields change."""

    NAME: ClassVar[str]
    KIND: ClassVar[str]

    def reboot_reason(self) -> str | None:
        """Why the node must reboot now that this step is done (None: it need not)."""
        return None

    def counters(self) -> dict[str, int]:
        """What the step did, counted, added up in its run (for the metrics)."""
        return {}


#: Every record type by name, and the nested value types by class name (for decoding).
RECORDS: dict[str, type[Record]] = {}
_NESTED: dict[str, type[Any]] = {}
R = TypeVar("R", bound=Record)
T = TypeVar("T")


def record(name: str, version: int = 1) -> Callable[[type[R]], type[R]]:
    """Register a record type under ``name`` with kind ``torcx-tectonic.<name>.v<version>``."""

    def register(cls: type[R]) -> type[R]:
        cls.NAME, cls.KIND = name, f"{KIND_PREFIX}{name}.v{version}"
        RECORDS[name] = cls
        return cls

    return register


def nested(cls: type[T]) -> type[T]:
    """Register a value type used inside records."""
    _NESTED[cls.__name__] = cls
    return cls


@record("os-versions")
@dataclass(frozen=True)
class OsVersions(Record):
    """The running OS and the one that boots next."""

    board: str
    current: str
    next: str | None
    #: where the next version came from ("update_engine", or why there is none)
    next_source: str
    #: outcome of a forced OS update (bootstrap), None when none was attempted
    update: str | None = None
    update_failures: tuple[str, ...] = ()
    warning: str | None = None


@record("kubernetes-version")
@dataclass(frozen=True)
class KubernetesVersion(Record):
    version: str
    source: str


@record("runtime-choice")
@dataclass(frozen=True)
class RuntimeChoice(Record):
    """The runtime version chosen for the Kubernetes version, and for which OS
    versions; ``version`` is None when no OS involved has remote addons."""

    runtime: str
    version: str | None
    os_versions: tuple[str, ...]
    kube_version: str
    preferred: tuple[str, ...] = ()
    mapping_source: str = ""
    #: runtime versions each OS version's manifest offers
    offered: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: sha256 of each verified manifest in the cache, by OS version
    manifests: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


@record("pin")
@dataclass(frozen=True)
class RuntimePin(Record):
    """A fact of the run, kept even when the choice fails: the runtime
    version the node is pinned to (None: no pin) and where that was read,
    so the status can say why a verdict is not ok."""

    version: str | None
    source: str


class RuntimeInstalled(Record):
    """What a backend's install step records: the runtime version now in
    place for the next boot, and the one before it."""

    runtime: str
    version: str | None
    previous: str | None
    runtime_changed: bool

    def change(self) -> str | None:
        """The runtime change the next boot brings, in words (None: none)."""
        if not self.runtime_changed:
            return None
        before = self.previous if self.previous is not None else "the OS's own"
        return f"{self.runtime} changes from {before} to {self.version}"


@nested
@dataclass(frozen=True)
class AddonPlacement:
    """Where the addon for one OS version is: ``action`` is ``vendor`` (in that
    OS image), ``present`` (already stored), ``downloaded`` or ``linked``."""

    os: str
    action: str
    path: str
    url: str | None = None
    bytes: int = 0


@record("addons")
@dataclass(frozen=True)
class AddonsInstalled(RuntimeInstalled):
    runtime: str
    version: str | None
    placements: tuple[AddonPlacement, ...] = ()
    profile: str | None = None
    changed_files: tuple[str, ...] = ()
    #: the runtime version that ran (or was selected) before, and whether it changes
    previous: str | None = None
    runtime_changed: bool = False

    def counters(self) -> dict[str, int]:
        return {"downloaded_bytes": sum(p.bytes for p in self.placements if p.action == "downloaded"),
                "addons_installed": sum(1 for p in self.placements if p.action in ("downloaded", "linked"))}


@record("extension")
@dataclass(frozen=True)
class ExtensionInstalled(RuntimeInstalled):
    """The runtime image now linked for systemd-sysext, and how it fits the OS versions."""

    runtime: str
    version: str
    image: str
    link: str
    action: str
    bytes: int = 0
    #: the runtime version linked before (None: Flatcar's own image)
    previous: str | None = None
    runtime_changed: bool = False
    #: per OS version: why its systemd-sysext merges the image
    fits: dict[str, str] = field(default_factory=dict)
    #: when the image is merged: "at the next boot" or "now"
    activated: str = ""

    def counters(self) -> dict[str, int]:
        return {"downloaded_bytes": self.bytes if self.action == "downloaded" else 0,
                "addons_installed": 1 if self.action == "downloaded" else 0}


@record("rollback")
@dataclass(frozen=True)
class RolledBack(RuntimeInstalled):
    """What ``torcx-tectonic rollback`` put back: the runtime version the
    next boot runs again, the one it replaced, where the older version is
    found, whether Docker's data is emptied first and when it applies. Kept
    in the rollback's own run, so this boot's view of what runs follows it
    as it follows an install step's record."""

    runtime: str
    version: str
    previous: str | None
    found: tuple[str, ...]
    #: the Docker reset the next boot does ("from → to"), None without one
    reset: str | None
    #: when it applies: "at the next boot", or "now" (sysext with activate = refresh)
    activated: str
    runtime_changed: bool = True


@record("kubelet-image-choice")
@dataclass(frozen=True)
class KubeletImageChoice(Record):
    """The kubelet image chosen for the run's Kubernetes version under the
    version-skew policy; ``version`` is None when systemd-sysupdate manages
    the image (``managed_by`` says how)."""

    name: str
    version: str | None
    #: the version it was chosen for: the api-server's (bootstrap) or kubelet.env's
    target: str
    reason: str
    #: the kubelet image linked before (None: none)
    current: str | None = None
    offered: tuple[str, ...] = ()
    #: sha256 of the verified checksum list in the cache
    manifests: dict[str, str] = field(default_factory=dict)
    managed_by: str | None = None


@record("kubelet-extension")
@dataclass(frozen=True)
class KubeletImageInstalled(ExtensionInstalled):
    """The kubelet image now linked for systemd-sysext (none when
    systemd-sysupdate manages it: ``managed_by``)."""

    managed_by: str | None = None

    def change(self) -> str | None:
        if not self.runtime_changed:
            return None
        return f"the kubelet changes from {self.previous or 'none'} to {self.version}"


@record("kubelet-follow")
@dataclass(frozen=True)
class KubeletFollowed(Record):
    """What the timer's look at the api-server decided for kubelet.env."""

    api_server: str
    before: str
    after: str
    reason: str


@record("kubelet-env")
@dataclass(frozen=True)
class KubeletEnvWritten(Record):
    path: str
    written: bool
    kube_version: str


@record("bootstrap-finish")
@dataclass(frozen=True)
class BootstrapFinished(Record):
    kubelet_enabled: bool
    reboot: bool
    reboot_reasons: tuple[str, ...] = ()
    #: set when this boot's bootstrap had already ended: nothing was done
    already_finished: bool = False

    def reboot_reason(self) -> str | None:
        return ", ".join(self.reboot_reasons) if self.reboot else None


@record("store-gc")
@dataclass(frozen=True)
class StoresCollected(Record):
    current_os: str
    removed: tuple[str, ...] = ()


@record("annotation")
@dataclass(frozen=True)
class NodeAnnotated(Record):
    node: str
    annotation: str
    label: str


@record("node-labels")
@dataclass(frozen=True)
class NodeLabelled(Record):
    """What the node wrote on its own Node object (None: a key removed)."""

    node: str
    labels: dict[str, str | None]
    annotations: dict[str, str | None]


@record("api-server")
@dataclass(frozen=True)
class ApiServerUnreachable(Record):
    """A fact of the run, not a step's output: no connection could be made to
    the api-server, so the later steps of this run use the installer's files
    at once instead of paying the retries again."""

    server: str
    reason: str
    step: str


@record("kubelet-recheck")
@dataclass(frozen=True)
class KubeletRechecked(Record):
    used: str
    now: str
    rerun: bool


@record("docker-reset")
@dataclass(frozen=True)
class DockerReset(Record):
    removed: tuple[str, ...] = ()
    booted: str | None = None


@nested
@dataclass(frozen=True)
class StepRun:
    step: str
    result: str
    started: float
    finished: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class Run:
    """One run of a flow, from its first step to its end."""

    KIND: ClassVar[str] = f"{KIND_PREFIX}run.v2"
    #: read as well: v1 records lack the backoff's fields (their defaults fit them)
    OLDER_KINDS: ClassVar[tuple[str, ...]] = (f"{KIND_PREFIX}run.v1",)

    flow: str
    id: str
    started: float
    result: str = RUNNING
    steps: tuple[StepRun, ...] = ()
    finished: float | None = None
    failed_step: str | None = None
    failure: str | None = None
    #: what an operator should know about how it ended ("rebooting for ...", a warning)
    note: str | None = None
    #: what its steps did, counted (bytes downloaded, addons installed)
    counters: dict[str, int] = field(default_factory=dict)
    #: why the run before this one failed, when it did: a flow that is triggered
    #: again after a failure must not hide what went wrong
    previous_failure: str | None = None
    #: runs of the flow that failed in a row: before this one, and this one too once it failed
    failed_in_a_row: int = 0
    #: when a flow that backs off tries again after this failed run (time.time())
    next_try: float | None = None

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else max(self.finished - self.started, 0.0)

    def with_step(self, step: StepRun) -> Run:
        """This run with ``step``'s entry added or replaced."""
        steps = (*(s for s in self.steps if s.step != step.step), step)
        return dataclasses.replace(self, steps=steps)


@dataclass(frozen=True)
class RuntimeChange:
    """The last change of the runtime version a node boots, kept across boots.

    The install records say what a change replaced (``previous``), but they
    are this boot's, in /run: after the reboot that applies the change, the
    Docker reset that empties the older Docker's data and the kubelet's
    upgrade, they are gone, and the disk alone (a store or an image GC kept)
    says what could be put back, not what ran before. So the step runner
    keeps the last change here when an install step records one, and a
    rollback reads it (then checks on disk that the older version is still
    there)."""

    KIND: ClassVar[str] = f"{KIND_PREFIX}runtime-change.v1"

    runtime: str
    #: the version the node ran before (None: the OS's own, which is nothing of ours to put back)
    previous: str | None
    version: str
    changed: float
    #: the flow that made the change, or "rollback"
    by: str


def load_change(paths: NodePaths) -> RuntimeChange | None:
    """The last runtime change, or None when none was recorded on this node."""
    path = paths.runtime_change
    try:
        document = _read_document(path, RuntimeChange.KIND, "the last runtime change")
    except FileNotFoundError:
        return None
    return _build(RuntimeChange, {k: v for k, v in document.items() if k != "kind"}, str(path))


def note_change(paths: NodePaths, change: RuntimeChange) -> bool:
    """Keep ``change`` as the last one, unless it is the one kept already (a
    flow run again before the reboot): its time stays the first run's.
    Returns whether it was written."""
    try:
        kept = load_change(paths)
    except StateError:
        kept = None  # replaced: a document of another version says nothing a rollback could trust
    if kept is not None and (kept.runtime, kept.previous, kept.version) == (change.runtime, change.previous,
                                                                            change.version):
        return False
    _write_document(paths.runtime_change, RuntimeChange.KIND, encode(change))
    return True


# --- encoding ---------------------------------------------------------------------------------

def encode(value: Any) -> Any:
    """A record (or run) as plain JSON data."""
    return dataclasses.asdict(value)


def _type_error(where: str, expected: str, value: Any) -> StateError:
    return StateError(f"{where}: expected {expected}, found {type(value).__name__}")


def _decode(value: Any, type_: str, where: str) -> Any:
    """Check ``value`` against a field's declared type (as written in the
    class, e.g. ``tuple[str, ...]``) and build it; the documents are small
    and flat, so these few shapes cover them."""
    if type_.endswith(" | None"):
        return None if value is None else _decode(value, type_[: -len(" | None")], where)
    if type_ == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(where, "a number", value)
        return float(value)
    scalars = {"str": str, "int": int, "bool": bool}
    if type_ in scalars:
        if type(value) is not scalars[type_]:
            raise _type_error(where, f"a {type_}", value)
        return value
    if type_.startswith("tuple[") and type_.endswith(", ...]"):
        if not isinstance(value, list):
            raise _type_error(where, "a list", value)
        inner = type_[len("tuple["):-len(", ...]")]
        return tuple(_decode(item, inner, f"{where}[{i}]") for i, item in enumerate(value))
    if type_.startswith("dict[str, ") and type_.endswith("]"):
        if not isinstance(value, dict):
            raise _type_error(where, "an object", value)
        inner = type_[len("dict[str, "):-1]
        return {str(k): _decode(v, inner, f"{where}.{k}") for k, v in value.items()}
    if type_ in _NESTED:
        return _build(_NESTED[type_], value, where)
    raise TypeError(f"state: field type {type_!r} has no decoder")


def _build(cls: type[T], document: Any, where: str) -> T:
    if not isinstance(document, dict):
        raise _type_error(where, "an object", document)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(document) - set(fields))
    if unknown:
        raise StateError(f"{where}: unknown field {unknown[0]!r}; expected {', '.join(fields)}")
    values = {}
    for name, spec in fields.items():
        if name in document:
            values[name] = _decode(document[name], str(spec.type), f"{where}.{name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise StateError(f"{where}: missing field {name!r}")
    return cls(**values)


def _read_document(path: Path, kind: str, what: str, older: tuple[str, ...] = ()) -> dict[str, Any]:
    """The envelope of a state file, checked: ours, of ``kind`` (or one of the ``older`` kinds it reads)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise StateError(f"{path}: cannot read {what}: {err.strerror}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise StateError(f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes; expected {what}")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise StateError(f"{path}: not JSON; expected {what} ({kind})") from None
    found = document.get("kind") if isinstance(document, dict) else None
    if found != kind and found not in older:
        written_by = "another version of torcx-tectonic" if isinstance(found, str) and found.startswith(
            KIND_PREFIX) else "something else"
        raise StateError(f"{path}: kind is {found!r}, written by {written_by}; expected {kind}",
                         hint="run the flow again to replace it")
    return dict(document)


def _write_document(path: Path, kind: str, body: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps({"kind": kind, **body}, indent=2, sort_keys=True) + "\n")


def _run_id() -> str:
    """A new run's id: 16 random hex digits (what secrets.token_hex(8) makes, without loading it)."""
    return os.urandom(8).hex()


# --- a flow's run and its records ----------------------------------------------------------------

def load_run(paths: NodePaths, flow: str) -> Run | None:
    """The flow's last run, or None when it never ran on this node."""
    path = paths.runs_dir / f"{flow}.json"
    try:
        document = _read_document(path, Run.KIND, f"the run record of flow {flow}", Run.OLDER_KINDS)
    except FileNotFoundError:
        return None
    run = _build(Run, {k: v for k, v in document.items() if k != "kind"}, str(path))
    if run.result not in RESULTS:
        raise StateError(f"{path}: result {run.result!r} is not one of {', '.join(RESULTS)}")
    return run


class FlowState:
    """The run of one flow on one node, as its steps see it."""

    def __init__(self, paths: NodePaths, flow: str, clock: Callable[[], float] = time.time) -> None:
        self.paths = paths
        self.flow = flow
        self.clock = clock
        self.records_dir = Path(flow_state_dir(flow, paths.state_dir))
        self.run_file = paths.runs_dir / f"{flow}.json"
        #: the step running now (set when it begins or joins the run)
        self.step: str | None = None

    # the run record
    def this_boot(self, run: Run | None) -> bool:
        """Whether ``run`` began in this boot (its id is in /run)."""
        try:
            return run is not None and (self.records_dir / "run").read_text().strip() == run.id
        except OSError:
            return False

    def current(self) -> Run:
        """This boot's run of the flow, which must exist."""
        run = load_run(self.paths, self.flow)
        if run is None or not self.this_boot(run):
            raise StateError(f"flow {self.flow} has no run in this boot; its first step begins one")
        return run

    def _new(self, run: Run) -> Run:
        """Save a run that begins now, and mark it as this boot's."""
        self.records_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._save_run(run)
        write_atomic(self.records_dir / "run", run.id + "\n")
        return run

    def _save_run(self, run: Run) -> Run:
        document = encode(run)
        _write_document(self.run_file, Run.KIND, document)
        return run

    def begin(self, step: str) -> Run:
        """A new run, begun by the flow's first step."""
        self.step = step
        now = self.clock()
        try:
            before = load_run(self.paths, self.flow)
        except StateError:
            before = None
        previous = None
        failed = before.failed_in_a_row if before is not None and before.result == FAILED else 0
        if before is not None and before.result == FAILED:
            previous = f"the run begun at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(before.started))} " \
                       f"failed at {before.failed_step}: {before.failure}"
        elif before is not None and before.result == RUNNING:
            previous = f"the run begun at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(before.started))} " \
                       f"never ended (interrupted at {before.steps[-1].step if before.steps else '?'})"
        return self._new(Run(flow=self.flow, id=_run_id(), started=now,
                             steps=(StepRun(step, RUNNING, now),), previous_failure=previous, failed_in_a_row=failed))

    def resume(self, step: str, *, reopen: bool = False) -> Run:
        """This boot's run, now at ``step``; a later step of a run that ended
        (a follower, or a step started again by hand) joins it as it is, but
        with ``reopen`` a run that failed goes on (the flow was started again
        and the steps before this one had nothing to do: the bootstrap's,
        once kubelet.env exists), its failure kept as the previous one."""
        self.step = step
        run = self.current()
        if reopen and run.result == FAILED:
            run = dataclasses.replace(
                run, result=RUNNING, finished=None, failed_step=None, failure=None,
                previous_failure=f"this run failed at {run.failed_step}: {run.failure}; {step} continues it")
        return self._save_run(run.with_step(StepRun(step, RUNNING, self.clock())))

    def attempt_failed(self, step: str, message: str) -> Run:
        """Note on the running step why its last attempt failed (it tries again)."""
        run = self.current()
        started = next((s.started for s in run.steps if s.step == step), self.clock())
        return self._save_run(run.with_step(StepRun(step, RUNNING, started, None, message)))

    def step_interrupted(self, step: str, message: str, *, ends_run: bool = True) -> bool:
        """Record that ``step``'s process ended without the step's result
        (killed, crashed) while its run still runs; returns whether it did.
        A run that already ended keeps its result; a step that recorded its
        result before it was killed still stops its run (the unit failed, so
        the steps after it do not start), and the message says so."""
        try:
            run = load_run(self.paths, self.flow)
        except StateError:
            run = None
        if run is not None and self.this_boot(run):
            entry = next((s for s in run.steps if s.step == step), None)
            if run.result != RUNNING and (entry is None or entry.result != RUNNING):
                return False
            if entry is not None and entry.result == OK:
                message = f"{message} (after it had recorded its result)"
        self.step_failed(step, message, ends_run=ends_run)
        return True

    def _ended_step(self, run: Run, step: str, result: str, message: str | None) -> StepRun:
        started = next((s.started for s in run.steps if s.step == step), self.clock())
        return StepRun(step, result, started, self.clock(), message)

    def step_succeeded(self, step: str, *, ends_run: bool, note: str | None = None) -> Run:
        run = self.current()
        run = run.with_step(self._ended_step(run, step, OK, None))
        if ends_run and run.result == RUNNING:
            run = dataclasses.replace(run, result=OK, finished=self.clock(), note=note or run.note, failed_in_a_row=0)
        elif note:
            run = dataclasses.replace(run, note=note)
        return self._save_run(run)

    def step_failed(self, step: str, message: str, *, ends_run: bool = True) -> Run:
        """Record a failure; it ends the run unless the step follows a run that ended."""
        run = load_run(self.paths, self.flow)
        if not self.this_boot(run):
            # no run of this boot to join (a step started by hand): the failure is a run of its own
            run = self._new(Run(flow=self.flow, id=_run_id(), started=self.clock()))
            ends_run = True
        assert run is not None
        run = run.with_step(self._ended_step(run, step, FAILED, message))
        if ends_run:
            failed = run.failed_in_a_row + (0 if run.result == FAILED else 1)  # a failed run counts once
            run = dataclasses.replace(run, result=FAILED, finished=self.clock(), failed_step=step, failure=message,
                                      failed_in_a_row=failed)
        return self._save_run(run)

    def tries_again_at(self, when: float) -> Run:
        """Note on this boot's failed run when the flow tries again."""
        return self._save_run(dataclasses.replace(self.current(), next_try=when))

    def rebooting(self, step: str, reason: str) -> Run:
        """The run ends in a reboot that the step queues next."""
        run = self.current()
        run = run.with_step(self._ended_step(run, step, OK, None))
        return self._save_run(dataclasses.replace(run, result=REBOOTING, finished=self.clock(),
                                                  note=f"rebooting for: {reason}"))

    # the records
    def _record_path(self, cls: type[Record]) -> Path:
        return self.records_dir / f"{cls.NAME}.json"

    def save(self, value: Record) -> None:
        """Keep a step's output for the later steps, and count what it did in the run."""
        run = self.current()
        _write_document(self._record_path(type(value)), value.KIND,
                        {"flow": self.flow, "run": run.id, "time": self.clock(), "value": encode(value)})
        if value.counters():
            counters = dict(run.counters)
            for name, count in value.counters().items():
                counters[name] = counters.get(name, 0) + count
            self._save_run(dataclasses.replace(run, counters=counters))

    def load(self, cls: type[R]) -> R:
        """The record of type ``cls`` this run's earlier step wrote."""
        run = self.current()
        path = self._record_path(cls)
        what = f"the {cls.NAME} record of flow {self.flow}"
        try:
            document = _read_document(path, cls.KIND, what)
        except FileNotFoundError:
            raise StateError(f"flow {self.flow}: no {cls.NAME} recorded in this run ({path} is missing): "
                             "the step that decides it has not run") from None
        if document.get("run") != run.id:
            raise StateError(f"{path}: recorded by an earlier run of flow {self.flow}, not by this one")
        return _build(cls, document.get("value"), f"{path}: value")

    def fact(self, cls: type[R]) -> R | None:
        """A record of this run that may not exist (a fact a step learnt,
        such as an unreachable api-server): None when there is none."""
        try:
            return self.load(cls)
        except StateError:
            return None

    def records(self) -> dict[str, Record]:
        """Every record of this boot's run that can be read (for the status)."""
        found: dict[str, Record] = {}
        for name, cls in RECORDS.items():
            try:
                found[name] = self.load(cls)
            except StateError:
                continue
        return found


# --- the cache of verified downloads ---------------------------------------------------------------

class VerifiedCache:
    """Verified documents (manifests, checksum lists, extension-releases) by
    kind and name: the step that verifies one stores it, later steps and the
    status read it back, by digest when they must have exactly that one."""

    def __init__(self, cache_dir: Path, kind: str) -> None:
        self.dir = cache_dir / kind

    def file(self, name: str) -> Path:
        return self.dir / name

    def store(self, name: str, raw: bytes) -> str:
        """Keep ``raw`` (already verified); returns its sha256 for the record."""
        write_if_changed(self.file(name), raw)
        return hashlib.sha256(raw).hexdigest()

    def read(self, name: str, what: str, digest: str | None = None) -> bytes:
        """The cached document; with ``digest``, exactly the one a step verified."""
        path = self.file(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise StateError(f"{path}: no verified {what} cached") from None
        if digest is not None and hashlib.sha256(raw).hexdigest() != digest:
            raise StateError(f"{path}: changed since it was verified in this run; expected sha256 {digest[:16]}…")
        return raw

    def remove(self, name: str) -> None:
        """Forget a document, durably (a power cut does not bring it back)."""
        try:
            self.file(name).unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.dir)


class ManifestCache(VerifiedCache):
    """Verified manifests by board and OS version."""

    def __init__(self, cache_dir: Path) -> None:
        super().__init__(cache_dir, "manifests")

    @staticmethod
    def _name(board: str, os_version: str) -> str:
        return f"{board}/{os_version}.json"

    def path(self, board: str, os_version: str) -> Path:
        return self.file(self._name(board, os_version))

    def put(self, board: str, os_version: str, raw: bytes) -> str:
        return self.store(self._name(board, os_version), raw)

    def get(self, board: str, os_version: str, digest: str | None = None) -> bytes:
        return self.read(self._name(board, os_version), f"manifest for {board} {os_version}", digest)
