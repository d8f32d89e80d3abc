"""strategy.choose: the version choice of docs/design.md, 'Version choice', as a table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from torcx_tectonic import strategy
from torcx_tectonic.errors import InputError
from torcx_tectonic.strategy import NoRuntimeVersion, Plan

PREFERRED = ("17.03", "1.12")


@pytest.mark.parametrize(
    ("current", "upcoming", "offered", "expected"),
    [
        ("1632.3.0", None, {"1632.3.0": ["1.12", "17.03"]}, Plan("17.03", ("1632.3.0",))),
        ("1632.3.0", None, {"1632.3.0": ["1.12"]}, Plan("1.12", ("1632.3.0",))),
        (
            "1632.3.0",
            "1688.5.3",
            {"1688.5.3": ["17.03"], "1632.3.0": ["17.03", "1.12"]},
            Plan("17.03", ("1688.5.3", "1632.3.0")),
        ),
        ("1632.3.0", "1688.5.3", {"1688.5.3": ["17.03"], "1632.3.0": ["1.12"]}, Plan("17.03", ("1688.5.3",))),
        (
            "1632.3.0",
            "1688.5.3",
            {"1688.5.3": ["1.12"], "1632.3.0": ["17.03", "1.12"]},
            Plan("1.12", ("1688.5.3", "1632.3.0")),
        ),
        ("1632.3.0", "1688.5.3", {"1688.5.3": ["17.03"]}, Plan("17.03", ("1688.5.3",))),
        ("1465.8.0", "1632.3.0", {"1632.3.0": ["17.03"], "1465.8.0": ["17.03"]}, Plan("17.03", ("1632.3.0",))),
        ("1520.3.0", None, {"1520.3.0": ["1.12"]}, Plan("1.12", ("1520.3.0",))),
        ("1632.3.0", "1632.3.0", {"1632.3.0": ["17.03"]}, Plan("17.03", ("1632.3.0",))),
        ("1632.3.0", "1465.8.0", {"1632.3.0": ["17.03"]}, Plan("17.03", ("1632.3.0",))),
    ],
    ids=[
        "current-only-first-preference",
        "current-only-second-preference",
        "both-os-offer-it",
        "other-os-lacks-it",
        "next-os-decides-the-version",
        "other-manifest-missing",
        "current-before-epoch",
        "epoch-itself",
        "next-equals-current",
        "next-before-epoch",
    ],
)
def test_choose(current: str, upcoming: str | None, offered: Mapping[str, Sequence[str]], expected: Plan) -> None:
    plan = strategy.choose(
        kube_version="v1.8.4+coreos.0",
        preferred=PREFERRED,
        mapping_source="ConfigMap x",
        current_os=current,
        next_os=upcoming,
        offered=offered,
    )
    assert plan == expected


@pytest.mark.parametrize(("current", "upcoming"), [("1465.8.0", None), ("1465.8.0", "1520.2.0")])
def test_choose_nothing_before_the_epoch(current: str, upcoming: str | None) -> None:
    assert (
        strategy.choose(
            kube_version="v1.8.4",
            preferred=PREFERRED,
            mapping_source="m",
            current_os=current,
            next_os=upcoming,
            offered={},
        )
        is None
    )


@pytest.mark.parametrize(
    ("preferred", "offered", "offers_text", "accepts_text"),
    [
        (PREFERRED, {"1688.5.3": ["1.13", "17.09"]}, "offers 1.13, 17.09", "accept 17.03, 1.12"),
        (PREFERRED, {}, "offers none", "accept 17.03, 1.12"),
        ((), {"1688.5.3": ["17.03"]}, "offers 17.03", "accept none"),
    ],
    ids=["no-overlap", "manifest-missing", "nothing-preferred"],
)
def test_no_runtime_version_names_everything(
    preferred: Sequence[str], offered: Mapping[str, Sequence[str]], offers_text: str, accepts_text: str
) -> None:
    with pytest.raises(NoRuntimeVersion) as caught:
        strategy.choose(
            kube_version="v1.9.1+coreos.0",
            preferred=preferred,
            mapping_source="ConfigMap tectonic-system/tectonic-torcx-runtime-mappings",
            current_os="1632.3.0",
            next_os="1688.5.3",
            offered=offered,
        )
    message = str(caught.value)
    assert message.startswith("no docker version for Kubernetes v1.9.1+coreos.0: ")
    assert "the mappings from ConfigMap tectonic-system/tectonic-torcx-runtime-mappings " + accepts_text in message
    assert "the manifest for OS 1688.5.3 " + offers_text in message
    assert isinstance(caught.value, InputError)


def test_the_runtime_name_is_in_the_message() -> None:
    with pytest.raises(NoRuntimeVersion, match="^no podman version for Kubernetes v1.8.4"):
        strategy.choose(
            kube_version="v1.8.4",
            preferred=["1"],
            mapping_source="m",
            current_os="1632.3.0",
            next_os=None,
            offered={},
            runtime="podman",
        )


@pytest.mark.parametrize(
    ("version", "supported"),
    [("1520.2.9", False), ("1520.3.0", True), ("1520.3.1", True), ("999.99.99", False), ("2000.0.0", True)],
)
def test_supports_addons(version: str, supported: bool) -> None:
    assert strategy.supports_addons(version) is supported


def test_bad_os_version_is_an_input_error() -> None:
    with pytest.raises(InputError, match="OS version '../1632.3.0' is not allowed; expected MAJOR.MINOR.PATCH"):
        strategy.choose(
            kube_version="v1.8.4",
            preferred=PREFERRED,
            mapping_source="m",
            current_os="1632.3.0",
            next_os="../1632.3.0",
            offered={},
        )
