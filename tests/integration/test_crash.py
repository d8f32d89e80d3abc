"""Crash at any point: each step of each flow SIGKILLed at deterministic points.

For every kill point of tests/reliability.py the campaign puts a node in the
state just before the step (a snapshot it restores), runs the step alone
under strace until the kill (tests/integration/strace.py), and checks:

- the step died at exactly that call (its trace ends there, unfinished);
- no temporary file is left where torcx, the kubelet or Docker look, nor in
  the state directories (the unit's ``step-stopped`` removes what the killed
  process could not);
- every file the step changes is byte for byte as before the step or as
  after it (what an uninterrupted run of the step left), and nothing else
  changed; the point's ``outcome`` says which, and is checked too;
- the run record says the step's process was killed;
- running the flow again converges: the node is exactly as after an
  uninterrupted run of the whole flow, and that run ends ok.

A stall kill is the same, but the step is killed (``systemctl kill``) while
it waits for a download the bucket holds mid-body.

The points of the sysext backend run on a Flatcar-like node
(simnode.cluster.flatcar_node): the runtime is a system extension image that
the steps store in /opt/extensions and link from /etc/extensions.

Each flow of each backend gets one node for all its points: a restore is a
tar of the state directories, much cheaper than a boot.
``TT_CRASH_TRACES=<dir>`` writes each step's reference trace there, to
choose new points from.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from simnode.cluster import ANNOTATION, CLUO_PREFIX, Cluster, Release, cluster_node, flatcar_node, kubelet_env
from simnode.flatcar import LEVELLED
from simnode.node import Node
from tests.reliability import (
    CURRENT,
    FLATCAR_CURRENT,
    FLATCAR_NEXT,
    KILL_POINTS,
    NEXT,
    OLD_IMAGES,
    STALL_KILLS,
    SYSEXT,
    TORCX,
    KillPoint,
)

from . import nodestate
from .flows import last_run, unit_result
from .nodestate import NO_START_LIMIT, Observed, observe, outcome
from .strace import STRACE_DIR, Call, StepUnderStrace, sync_problems, unit_name

if shutil.which("strace") is None:
    pytest.skip("the crash campaign needs strace (make test installs it)", allow_module_level=True)

RELEASES = [Release(CURRENT, ["1.12", "17.03", "17.06"]), Release(NEXT, ["1.12", "17.03", "17.06"])]
LABEL = f"{CLUO_PREFIX}/before-reboot"
OLD_STORES = {f"/var/lib/torcx/store/{v}/docker:1.12.torcx.tgz": f"old {v}" for v in ("1520.3.0", "1600.0.0")}
OLD_DOCKER = {"/var/lib/docker/containers/c1/config.json": "{}",
              "/var/lib/docker/image/overlay2/repositories.json": "{}", "/var/lib/docker/volumes/metadata.db": "db"}
#: In the bootstrap campaign, the path units the last step starts must not run the other flows meanwhile.
PATH_UNITS_IDLE = {f"/etc/systemd/system/{unit}.d/90-tt-crash.conf": "[Unit]\nConditionPathExists=/tt-never\n"
                   for unit in ("torcx-new-os.path", "torcx-new-kubelet.path")}

#: The steps of each flow as the campaign runs them (name, libexec entry point), with the torcx backend.
STEPS = {
    "bootstrap": (("os-update", "next-os"), ("kubelet-version", "kubelet-version"),
                  ("docker-version", "docker-version"), ("addons", "install-addons"), ("kubelet-env", "kubelet-env"),
                  ("finish", "finish-bootstrap")),
    "new-os": (("os-version", "next-os"), ("kubelet-version", "kubelet-version"), ("docker-version", "docker-version"),
               ("addons", "install-addons"), ("gc", "gc-stores"), ("annotate", "annotate-node")),
    "new-kubelet": (("kubelet-version", "kubelet-version"), ("os-version", "next-os"),
                    ("docker-version", "docker-version"), ("addons", "install-addons")),
    "docker-reset": (("data", "docker-reset"),),
}
#: The steps the sysext backend runs instead, by the torcx step's entry point.
SYSEXT_STEPS = {"docker-version": ("runtime-version", "extension-version"),
                "install-addons": ("extension", "install-extension"), "gc-stores": ("gc", "gc-extensions")}
#: The flows a target starts; a path unit starts the others' last step, which pulls in the steps before it.
TARGET_FLOWS = ("bootstrap", "new-os")
#: The runtime image of a bootstrapped sysext node, and the ones its bucket offers.
SYSEXT_IMAGE = "docker-24.0.9-x86-64.raw"
SYSEXT_VERSIONS = ("24.0.9", "25.0.3")

#: Every step's uninterrupted, traced run in this session, by (backend, flow, step).
REFERENCE_CALLS: dict[tuple[str, str, str], list[Call]] = {}


def flow_steps(backend: str, flow: str) -> tuple[tuple[str, str], ...]:
    """The steps of ``flow`` (name, libexec entry point) with ``backend``."""
    if backend == TORCX:
        return STEPS[flow]
    return tuple(SYSEXT_STEPS.get(entry, (name, entry)) for name, entry in STEPS[flow])


def flow_unit(backend: str, flow: str) -> str:
    """What starts a whole run of the flow."""
    return f"torcx-{flow}.target" if flow in TARGET_FLOWS else unit_name(flow, flow_steps(backend, flow)[-1][0])


def kube_tag(flow: str) -> str:
    """The kubelet.env of a bootstrapped node: the new-kubelet campaign's has moved to Kubernetes 1.9."""
    return "v1.9.1_coreos.0" if flow == "new-kubelet" else "v1.8.4_coreos.0"


def update(backend: str) -> dict[str, object]:
    """An update_engine that applies the next OS of the backend's node."""
    return {"mode": "update", "new_version": NEXT if backend == TORCX else FLATCAR_NEXT, "step_seconds": 0.05}


@dataclass
class StepReference:
    """A step's start (a snapshot), what its uninterrupted run changed, and its calls."""

    step: str
    snapshot: str
    tracer: StepUnderStrace
    before: dict[str, str]
    after: dict[str, str]
    calls: list[Call]
    annotation_before: str | None = None


@dataclass
class Campaign:
    """One node for all the kill points of one flow with one backend."""

    backend: str
    flow: str
    node: Node
    cluster: Cluster
    stack: contextlib.ExitStack
    end: dict[str, str] = field(default_factory=dict)
    steps: dict[str, StepReference] = field(default_factory=dict)

    # --- state ---------------------------------------------------------------
    def snapshot(self, name: str) -> str:
        return nodestate.snapshot(self.node, f"{STRACE_DIR}/{self.flow}-{name}.tar")

    def restore(self, path: str, annotation: str | None = None) -> None:
        nodestate.restore(self.node, path)
        if self.flow == "new-os":
            if annotation is None:
                self.cluster.api.update_node_metadata("node-1", remove_annotations=[ANNOTATION])
            else:
                self.cluster.api.update_node_metadata("node-1", set_annotations={ANNOTATION: annotation})

    def annotation(self) -> str | None:
        return self.cluster.api.annotations().get(ANNOTATION)

    def observe(self, *, with_records: bool = True) -> Observed:
        found = observe(self.node, self.flow, with_records=with_records)
        if self.flow == "new-os":
            found.state["api annotation"] = str(self.annotation())
        return found

    # --- runs ------------------------------------------------------------------
    def run_flow(self) -> None:
        """A whole run of the flow, as its trigger starts it; it must end ok
        (or be skipped: a Docker reset whose marker is gone has nothing to do)."""
        unit = flow_unit(self.backend, self.flow)
        self.node.systemctl("start", unit, check=False, timeout=180)
        if self.flow == "new-kubelet":  # the re-check follows the run in a job of its own
            self.node.wait_for(lambda: unit_result(self.node, "torcx-new-kubelet-recheck.service")[0] in (
                "inactive", "failed"), timeout=60, what="the re-check")
        skipped = self.node.systemctl("show", "-p", "ConditionResult", "--value", unit).stdout.strip() == "no"
        run = last_run(self.node, self.flow)
        assert skipped or run["result"] == "ok", (run, self.node.journal(extra=["-u", "torcx-*"])[-4000:])

    def reference(self, step: str) -> StepReference:
        """The step's start and its uninterrupted, traced run (once per step)."""
        if step in self.steps:
            return self.steps[step]
        steps = flow_steps(self.backend, self.flow)
        names = [s for s, _ in steps]
        self.restore(f"{STRACE_DIR}/{self.flow}-start.tar", None)
        index = names.index(step)
        if index > 0:  # the steps before it, as the flow runs them
            self.node.systemctl("start", f"torcx-{self.flow}-{names[index - 1]}.service", timeout=120)
        snapshot = self.snapshot(f"before-{step}")
        annotation = self.annotation() if self.flow == "new-os" else None
        before = self.observe().state
        tracer = StepUnderStrace(self.node, self.flow, step, dict(steps)[step])
        tracer.install()
        calls = tracer.run()
        assert unit_result(self.node, tracer.unit) == ("inactive", "success"), self.node.journal(tracer.unit)
        if os.environ.get("TT_CRASH_TRACES"):
            where = Path(os.environ["TT_CRASH_TRACES"])
            where.mkdir(parents=True, exist_ok=True)
            (where / f"{self.backend}-{self.flow}-{step}.trace").write_text("\n".join(c.line for c in calls) + "\n")
        reference = StepReference(step, snapshot, tracer, before, self.observe().state, calls, annotation)
        self.steps[step] = reference
        REFERENCE_CALLS[(self.backend, self.flow, step)] = calls
        return reference

    def converge(self) -> list[str]:
        """Run the flow again (every traced step configured without a kill);
        what keeps the node from the end state of an uninterrupted run."""
        for reference in self.steps.values():
            reference.tracer.configure(None)
        try:
            self.run_flow()
        except AssertionError as err:
            return [f"the flow run again did not end ok: {err}"]
        found = self.observe(with_records=False)
        problems = [f"temporary files left after the run: {found.temporary}"] if found.temporary else []
        end = dict(self.end)
        if found.state != end:
            problems.append("not converged: " + repr({k: (found.state.get(k), end.get(k))
                                                      for k in set(found.state) | set(end)
                                                      if found.state.get(k) != end.get(k)}))
        return problems


def _torcx_node(stack: contextlib.ExitStack, flow: str, bundle: Path) -> tuple[Cluster, Node]:
    """A Container Linux node: fresh for the bootstrap, else bootstrapped
    (17.03 for the running OS) with what the flow needs besides."""
    if flow == "bootstrap":
        return stack.enter_context(cluster_node(
            bundle, RELEASES, os_version=CURRENT, update_engine=update(TORCX),
            settings={"bootstrap": {"reboot": "no"}}, files={**NO_START_LIMIT, **PATH_UNITS_IDLE}))
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tt-crash-")))
    cluster = stack.enter_context(Cluster(tmp, RELEASES))
    # the Docker reset's node booted the 17.06 the profile selects (torcx applied it), on 17.03's data
    docker = "17.06" if flow == "docker-reset" else "17.03"
    files = {**cluster.node_files(), **NO_START_LIMIT,
             **cluster.bootstrapped_files(CURRENT, docker=docker, kube_tag=kube_tag(flow))}
    if flow == "new-os":
        files.update(OLD_STORES)
    if flow == "docker-reset":
        files.update(OLD_DOCKER)
        files["/var/lib/torcx-tectonic/docker-reset-needed"] = '{"from": "17.03", "to": "17.06"}\n'
    node = stack.enter_context(Node(bundle=bundle, os_version=CURRENT, files=files, update_engine={"mode": "none"}))
    return cluster, node


def _sysext_node(stack: contextlib.ExitStack, flow: str, bundle: Path) -> tuple[Cluster, Node]:
    """A Flatcar-like node: fresh for the bootstrap, else bootstrapped (docker
    24.0.9 stored and linked, Flatcar's own image masked); for the new OS,
    older images beside it, the oldest first to go."""
    cluster, node = stack.enter_context(flatcar_node(
        bundle, dict.fromkeys(SYSEXT_VERSIONS, LEVELLED), os_version=FLATCAR_CURRENT,
        update_engine=update(SYSEXT) if flow == "bootstrap" else None, settings={"bootstrap": {"reboot": "no"}},
        files={**NO_START_LIMIT, **PATH_UNITS_IDLE}))
    if flow == "bootstrap":
        return cluster, node
    image = f"/opt/extensions/docker/{SYSEXT_IMAGE}"
    node.write("/etc/kubernetes/kubelet.env", kubelet_env(kube_tag(flow)))
    node.write(image, (cluster.bucket.root / "sysext" / SYSEXT_IMAGE).read_bytes())
    for link, target in (("docker.raw", image), ("docker-flatcar.raw", "/dev/null")):
        node.host_path(f"/etc/extensions/{link}").unlink(missing_ok=True)
        node.host_path(f"/etc/extensions/{link}").symlink_to(target)
    if flow == "new-os":
        now = time.time()
        for age, name in enumerate(OLD_IMAGES, start=1):  # GC goes by age: an hour apart, all older than the linked
            node.write(f"/opt/extensions/docker/{name}", f"an older image {name}")
            node.write(f"/var/cache/torcx-tectonic/sysext/{name}.release", LEVELLED)
            os.utime(node.host_path(f"/opt/extensions/docker/{name}"), (now - age * 3600, now - age * 3600))
    return cluster, node


#: How each backend's campaign node is made (not booted yet).
NODES: dict[str, Callable[[contextlib.ExitStack, str, Path], tuple[Cluster, Node]]] = {
    TORCX: _torcx_node, SYSEXT: _sysext_node}


def _campaign(backend: str, flow: str, bundle: Path) -> Campaign:
    stack = contextlib.ExitStack()
    try:
        cluster, node = NODES[backend](stack, flow, bundle)
        if flow == "new-os":
            cluster.api.update_node_metadata("node-1", set_labels={LABEL: "true"}, source="operator")
        node.boot()
        # Between two points the campaign restores files that path units follow: they stay stopped.
        node.systemctl("stop", "torcx-new-os.path", "torcx-new-kubelet.path", check=False)
        if flow == "new-os":
            node.set_update_engine(update(backend))
            node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
                     "AttemptUpdate")
            node.wait_for(node.update_marker_exists, what="the update to be applied")
        campaign = Campaign(backend, flow, node, cluster, stack)
        campaign.snapshot("start")
        campaign.run_flow()
        campaign.end = campaign.observe(with_records=False).state
        return campaign
    except BaseException:
        stack.close()
        raise


@pytest.fixture(scope="module")
def campaigns(bundle: Path) -> Iterator[dict[tuple[str, str], Campaign]]:
    """One campaign at a time (a node each), the one of the flow and backend at hand."""
    running: dict[tuple[str, str], Campaign] = {}
    yield running
    for campaign in running.values():
        campaign.stack.close()


def campaign_for(campaigns: dict[tuple[str, str], Campaign], point: KillPoint, bundle: Path) -> Campaign:
    key = (point.backend, point.flow)
    if key not in campaigns:
        for other in list(campaigns):
            campaigns.pop(other).stack.close()
        campaigns[key] = _campaign(*key, bundle)
    return campaigns[key]


def _find(reference: StepReference, point: KillPoint) -> Call:
    matching = [c for c in reference.calls if c.syscall == point.syscall and re.match(point.pattern, c.line)]
    assert len(matching) >= point.occurrence, (
        f"{point.id}: the step made {len(matching)} such calls; its calls:\n"
        + "\n".join(c.line[:160] for c in reference.calls))
    return matching[point.occurrence - 1]


def _after_kill(campaign: Campaign, reference: StepReference, point: KillPoint) -> tuple[str, list[str]]:
    """What the node holds after the kill, and everything wrong with it."""
    node = campaign.node
    found = campaign.observe()
    problems = [f"temporary files left after the kill: {found.temporary}"] if found.temporary else []
    result, wrong = outcome(reference.before, reference.after, found.state)
    problems += wrong
    run = last_run(node, campaign.flow) if node.exists(f"/var/lib/torcx-tectonic/runs/{campaign.flow}.json") else {}
    step = next((s for s in run.get("steps", ()) if s["step"] == point.step), None)
    if run.get("result") != "failed" or run.get("failed_step") != point.step or step is None \
            or "killed by signal KILL" not in (step["message"] or ""):
        problems.append(f"the run record does not say the step was killed: {run}")
    return result, problems


@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.id for p in KILL_POINTS])
def test_kill_point(point: KillPoint, campaigns: dict[tuple[str, str], Campaign], bundle: Path) -> None:
    campaign = campaign_for(campaigns, point, bundle)
    reference = campaign.reference(point.step)
    call = _find(reference, point)
    campaign.restore(reference.snapshot, reference.annotation_before)
    calls = reference.tracer.run(kill=call)
    assert calls and (calls[-1].syscall, calls[-1].nth) == (call.syscall, call.nth) and not calls[-1].completed, (
        f"expected to die at {call.line[:160]}, the trace ends with {calls[-1].line[:160] if calls else 'nothing'}")
    assert unit_result(campaign.node, reference.tracer.unit) == ("failed", "signal")
    result, problems = _after_kill(campaign, reference, point)
    problems += campaign.converge()
    if result != point.outcome:
        problems.append(f"observed outcome: {result!r}")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("point", STALL_KILLS, ids=[p.id for p in STALL_KILLS])
def test_kill_during_a_stalled_download(point: KillPoint, campaigns: dict[tuple[str, str], Campaign],
                                        bundle: Path) -> None:
    campaign = campaign_for(campaigns, point, bundle)
    reference = campaign.reference(point.step)
    campaign.restore(reference.snapshot, reference.annotation_before)
    bucket, node = campaign.cluster.bucket, campaign.node
    bucket.set_fault(point.pattern, body_bytes=64, stall=300, times=1)
    try:
        reference.tracer.configure(None)
        node.systemctl("start", "--no-block", "--job-mode=ignore-requirements", reference.tracer.unit)
        node.wait_for(lambda: bucket.stalled == 1, timeout=60, what="the download to stall mid-body")
        # the step's process, as strace's own kill does: strace then ends the way its tracee did
        main = node.systemctl("show", "-p", "MainPID", "--value", reference.tracer.unit).stdout.strip()
        node.run("sh", "-c", f"kill -KILL $(cat /proc/{main}/task/{main}/children)")
        node.wait_for(lambda: unit_result(node, reference.tracer.unit)[0] == "failed", timeout=60,
                      what="the step to end")
    finally:
        bucket.clear_faults()
    result, problems = _after_kill(campaign, reference, point)
    problems += campaign.converge()
    if result != point.outcome:
        problems.append(f"observed outcome: {result!r}")
    assert problems == [], "\n".join(problems)


#: Every kind of file the flows replace, as its rename's target shows it: the sync check must see each.
WRITE_PATHS = {
    "a downloaded addon": f'/var/lib/torcx/store/{NEXT}/docker:17.03.torcx.tgz"',
    "a linked addon": f'/var/lib/torcx/store/{CURRENT}/docker:17.03.torcx.tgz"',
    "a profile": '/etc/torcx/profiles/tectonic.json"', "next-profile": '/etc/torcx/next-profile"',
    "kubelet.env": '/etc/kubernetes/kubelet.env"', "the Docker reset marker": 'torcx-tectonic/docker-reset-needed"',
    "a run record": '/var/lib/torcx-tectonic/runs/bootstrap.json"',
    "a cached manifest": f'/var/cache/torcx-tectonic/manifests/amd64-usr/{NEXT}.json"',
    "a store GC moves aside": '/var/lib/torcx/store/.gc-',
    "Docker's data moved aside": '"/var/lib/docker.torcx-tectonic-old"',
    "a downloaded runtime image": f'/opt/extensions/docker/{SYSEXT_IMAGE}"',
    "a runtime image's link": '/etc/extensions/docker.raw"', "Flatcar's own image masked": 'docker-flatcar.raw"',
    "a cached checksum list": '/var/cache/torcx-tectonic/sysext/SHA256SUMS"',
}


def test_every_write_is_synced_before_its_rename_and_its_directory_after(campaigns: dict[tuple[str, str], Campaign],
                                                                         bundle: Path) -> None:
    """Power loss: a renamed file is never found empty or short, and a rename,
    a new directory or a removal is not undone by a power cut, because each
    file is synced before it is renamed into place and each directory after
    its entries change. The traces are the campaign's reference runs (made
    here when this test runs alone)."""
    for point in KILL_POINTS:
        if (point.backend, point.flow, point.step) not in REFERENCE_CALLS:
            campaign_for(campaigns, point, bundle).reference(point.step)
    problems = {f"{backend} {flow}/{step}": found for (backend, flow, step), calls in REFERENCE_CALLS.items()
                if (found := sync_problems(calls))}
    assert problems == {}
    renamed = [c.line for calls in REFERENCE_CALLS.values() for c in calls if c.syscall == "rename"]
    unseen = [what for what, target in WRITE_PATHS.items() if not any(target in line for line in renamed)]
    assert unseen == [], f"write paths no trace shows: {unseen}"
