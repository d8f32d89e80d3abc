"""Node labels: the node's answer as labels on its own Node object.

What the labels say is a pure function of the verdicts; a value outside
Kubernetes' label-value grammar is an error naming it and the rule, and
nothing is patched. The step reads the verdicts ``status`` gathers from a
node under a temporary root; the api-server is a stand-in for KubeClient
(replacing ``torcx_tectonic.steps.labels.client``) that records patches.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import pytest

from torcx_tectonic import flows
from torcx_tectonic.cluster.labels import LABEL_VALUE, NEXT_BOOT, REASON, RUNTIME, node_metadata
from torcx_tectonic.commands.status import gather
from torcx_tectonic.errors import InputError
from torcx_tectonic.state import NodeLabelled
from torcx_tectonic.steps.labels import label_node, metadata

from .helpers import make_config
from .stepenv import ADDON, CURRENT_OS, MAPPINGS, StepEnv

OUR_KEYS = {RUNTIME, NEXT_BOOT}


def test_an_ok_node_says_what_runs_and_that_its_next_boot_is_ok() -> None:
    found = node_metadata(runtime="docker", running="17.03", next_ok=True, reason="docker:17.03 from the store")
    assert found.labels == {RUNTIME: "docker-17.03", NEXT_BOOT: "ok"}
    assert found.annotations == {REASON: "docker:17.03 from the store"}


def test_a_node_whose_next_boot_is_wrong_is_on_the_worklist_with_the_reason() -> None:
    found = node_metadata(runtime="containerd", running="1.7.13", next_ok=False, reason="OS 3815.2.0 would not merge")
    assert found.labels == {RUNTIME: "containerd-1.7.13", NEXT_BOOT: "not-ok"}
    assert found.annotations[REASON] == "OS 3815.2.0 would not merge"


def test_an_unknown_running_version_removes_the_label_rather_than_guess() -> None:
    found = node_metadata(runtime="docker", running=None, next_ok=False, reason="the OS version is not known")
    assert found.labels[RUNTIME] is None  # a merge patch's null: the key goes
    assert found.patch() == {"metadata": {"labels": {RUNTIME: None, NEXT_BOOT: "not-ok"},
                                          "annotations": {REASON: "the OS version is not known"}}}


@pytest.mark.parametrize(("running", "why"), [
    ("1" * 60, "(67 characters)"),  # docker- and 60 digits: over 63
    ("17.03+coreos.1", "'docker-17.03+coreos.1'"),  # a torcx reference may hold '+', a label value not
    ("17.03.", "'docker-17.03.'"),  # must end with a letter or digit
], ids=["too-long", "plus", "trailing-dot"])
def test_a_value_that_is_not_a_label_value_is_an_error_naming_it_and_the_rule(running: str, why: str) -> None:
    with pytest.raises(InputError) as raised:
        node_metadata(runtime="docker", running=running, next_ok=True, reason="r")
    message = str(raised.value)
    assert f"node label {RUNTIME}=" in message and why in message
    assert "expected a Kubernetes label value: at most 63 characters" in message
    assert message.endswith("nothing was patched")


def test_the_grammar_is_kubernetes_label_value_grammar() -> None:
    for good in ("ok", "not-ok", "docker-17.03", "a", "A_b.c-9", "x" * 63):
        assert LABEL_VALUE.matches(good), good
    for bad in ("", "-a", "a-", "_a", "a b", "a/b", "x" * 64, "é"):
        assert not LABEL_VALUE.matches(bad), bad


class Api:
    """The api-server as the step sees it: the patches it was sent."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def patch_node(self, name: str, patch: Mapping[str, Any], what: str) -> dict[str, Any]:
        self.patches.append((name, dict(patch)))
        return {}


def bootstrapped(env: StepEnv, booted: str) -> None:
    """A node with docker 17.03 for the running OS, selected, with torcx having booted ``booted``."""
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    env.write(env.config.kubernetes.runtime_mappings, MAPPINGS)
    env.write(env.at(f"/var/lib/torcx/store/{CURRENT_OS}/docker:17.03.torcx.tgz"), ADDON.decode())
    env.write(env.paths.user_profiles / "tectonic.json", json.dumps(
        {"kind": "profile-manifest-v0", "value": {"images": [{"name": "docker", "reference": "17.03"}]}}))
    env.write(env.paths.next_profile, "tectonic\n")
    env.booted(booted)


def patch_by_step(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> tuple[Api, NodeLabelled]:
    api = Api()
    monkeypatch.setattr("torcx_tectonic.cluster.view.Cluster.client", lambda self: api)
    env.begin("node-labels")
    return api, label_node(env.context("node-labels", "patch"))


def test_the_step_patches_only_its_own_keys_on_its_own_node_from_the_status(env: StepEnv,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrapped(env, booted="17.03")
    api, record = patch_by_step(env, monkeypatch)
    [(node, patch)] = api.patches
    assert node == "node-1" and set(patch) == {"metadata"}
    assert patch["metadata"]["labels"] == {RUNTIME: "docker-17.03", NEXT_BOOT: "ok"}
    assert set(patch["metadata"]["annotations"]) == {REASON}
    assert patch["metadata"]["annotations"][REASON].startswith("docker:17.03 from ")
    assert record == NodeLabelled(node="node-1", labels=patch["metadata"]["labels"],
                                  annotations=patch["metadata"]["annotations"])


def test_a_running_version_that_is_no_label_value_patches_nothing(env: StepEnv,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrapped(env, booted="17.03+local.build")
    with pytest.raises(InputError, match=r"docker-17\.03\+local\.build.*expected a Kubernetes label value"):
        patch_by_step(env, monkeypatch)
    assert env.state("node-labels").fact(NodeLabelled) is None


def test_what_runs_is_what_the_backend_says_booted(env: StepEnv) -> None:
    bootstrapped(env, booted="17.03")
    torcx = gather(env.config, env.paths, units=lambda _: {})
    assert metadata(torcx).labels[RUNTIME] == "docker-17.03"
    unknown = dataclasses.replace(torcx, view=dataclasses.replace(torcx.view, booted=None))  # torcx left no metadata
    assert metadata(unknown).labels[RUNTIME] is None


def test_it_is_one_flow_that_nothing_waits_for_and_it_can_be_turned_off() -> None:
    on = {f.name: f for f in flows.all_flows(make_config())}
    labels = on[flows.NODE_LABELS]
    assert [s.name for s in labels.steps] == ["patch"] and labels.steps[0].network and not labels.steps[0].locked
    assert "multi-user.target" in labels.wanted_by  # at boot: the runtime that runs changes only then
    for flow in (on[flows.BOOTSTRAP], on[flows.NEW_OS], on[flows.NEW_KUBELET]):
        assert flow.unit(flow.steps[0]) in labels.wanted_by
    assert "torcx-new-os-annotate.service" not in labels.after  # the operator's label may take an hour
    assert flows.NODE_LABELS not in {f.name for f in flows.all_flows(make_config({"kubernetes.node_labels": "no"}))}
