"""Step annotate-node: wait for the update operator's before-reboot label,
then annotate. The api-server (a stand-in for KubeClient, replacing
``torcx_tectonic.steps.annotation.client``) and the clock (``annotation.time``)
are stand-ins; the flow state and the lock file are real."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest

from torcx_tectonic.errors import InputError, TorcxTectonicError
from torcx_tectonic.state import AddonsInstalled, NodeAnnotated, OsVersions, Record, StateError
from torcx_tectonic.steps.annotation import annotate

from .helpers import Clock
from .stepenv import BOARD, CURRENT_OS, NEXT_OS, FakeKube, StepEnv

COREOS = "container-linux-update.v1.coreos.com"
FLATCAR = "flatcar-linux-update.v1.flatcar-linux.net"


def _setup(env: StepEnv, monkeypatch: pytest.MonkeyPatch, label_after: int | None, addons: bool = True,
           **settings: str) -> tuple[FakeKube, Clock]:
    env.configure({f"kubernetes.{k}": v for k, v in settings.items()})
    prefix = env.config.kubernetes.annotation.rpartition("/")[0]
    kube, clock = FakeKube(f"{prefix}/before-reboot", label_after), Clock(0.0)
    monkeypatch.setattr("torcx_tectonic.steps.annotation.client", lambda config: kube)
    monkeypatch.setattr("torcx_tectonic.steps.annotation.time", clock)
    records: list[Record] = [OsVersions(BOARD, CURRENT_OS, NEXT_OS, "update_engine")]
    if addons:
        records.append(AddonsInstalled("docker", "17.03"))
    env.begin("new-os", *records)
    return kube, clock


def _annotate(env: StepEnv) -> NodeAnnotated:
    ctx = env.context("new-os", "annotate")
    return annotate(ctx, **ctx.step.params)  # type: ignore[arg-type]


def test_the_annotation_is_written_only_once_the_label_is_there(env: StepEnv,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    kube, clock = _setup(env, monkeypatch, label_after=6, label_poll_max_interval="5",
                         annotation=f"{FLATCAR}/hook-ok")
    record = _annotate(env)
    assert clock.sleeps == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert kube.looks == 7
    assert kube.annotations == [("node-1", {f"{FLATCAR}/hook-ok": "true"})]
    assert kube.labels_when_annotated == [{f"{FLATCAR}/before-reboot": "true"}]
    assert record == NodeAnnotated(node="node-1", annotation=f"{FLATCAR}/hook-ok", label=f"{FLATCAR}/before-reboot")


def test_a_node_already_labelled_is_annotated_at_once(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    kube, clock = _setup(env, monkeypatch, label_after=0)
    assert _annotate(env).annotation == f"{COREOS}/tectonic-torcx-pre-hook-ok"
    assert clock.sleeps == [] and kube.looks == 1
    assert kube.annotations == [("node-1", {f"{COREOS}/tectonic-torcx-pre-hook-ok": "true"})]


def test_no_label_in_time_fails_without_annotating(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    kube, clock = _setup(env, monkeypatch, label_after=None, label_timeout="20")
    with pytest.raises(TorcxTectonicError) as caught:
        _annotate(env)
    assert str(caught.value) == f"node node-1 did not get the label {COREOS}/before-reboot=true within 20s"
    assert kube.annotations == []
    assert clock.now <= 20 and clock.sleeps == [1.0, 2.0, 4.0, 8.0]


def test_the_annotation_needs_the_addons_record(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    kube, _ = _setup(env, monkeypatch, label_after=0, addons=False)
    with pytest.raises(StateError, match="flow new-os: no addons recorded in this run"):
        _annotate(env)
    assert kube.looks == 0 and kube.annotations == []


def test_without_kubeconfig_the_step_fails_naming_it(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    _setup(env, monkeypatch, label_after=0)
    monkeypatch.setattr("torcx_tectonic.steps.annotation.client", lambda config: None)
    with pytest.raises(InputError, match=f"no kubeconfig at {env.config.kubernetes.kubeconfig}: cannot annotate "
                                         "node node-1"):
        _annotate(env)


def test_the_annotation_waits_for_a_flow_that_holds_the_lock(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    kube, _ = _setup(env, monkeypatch, label_after=0)
    env.paths.lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(env.paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another flow is half done
    done = threading.Event()
    failures: list[BaseException] = []

    def step() -> None:
        try:
            _annotate(env)
        except BaseException as err:  # reported below, in the test's thread
            failures.append(err)
        done.set()

    worker = threading.Thread(target=step, daemon=True)
    worker.start()
    try:
        assert not done.wait(0.3)
        assert kube.looks == 1 and kube.annotations == []  # labelled, but waiting for the lock
    finally:
        os.close(fd)
    assert done.wait(10)
    worker.join()
    assert failures == []
    assert len(kube.annotations) == 1
