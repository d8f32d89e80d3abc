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


# --- pins (docs/design.md, 'Pins') ----------------------------------------------------------------------------

LISTED = {"1.8": ("17.03", "1.12"), "1.9": ("17.06", "17.03")}
ANNOTATED = "node node-1 annotation torcx-tectonic.io/pin-runtime"


@pytest.mark.parametrize(
    ("annotation", "configured", "expected"),
    [
        (None, "", None),
        ("", "", None),
        (None, "1.12", strategy.Pin("1.12", "[runtime] pin")),
        ("17.06", "1.12", strategy.Pin("17.06", ANNOTATED)),
        ("17.06", "", strategy.Pin("17.06", ANNOTATED)),
        ("", "1.12", strategy.Pin("1.12", "[runtime] pin")),
    ],
    ids=["no-pin", "empty-annotation", "key-only", "annotation-wins", "annotation-only", "empty-annotation-key"],
)
def test_resolve_pin(annotation: str | None, configured: str, expected: strategy.Pin | None) -> None:
    assert strategy.resolve_pin(annotation, ANNOTATED, configured, "[runtime] pin", "docker", LISTED, "m") == expected


@pytest.mark.parametrize(
    ("annotation", "configured", "message"),
    [
        ("latest", "", f"{ANNOTATED}: pin 'latest' is not allowed; expected a runtime version like 17.03"),
        ("v17.03", "", "pin 'v17.03' is not allowed"),
        ("17.03 ", "", "pin '17.03 ' is not allowed"),
        ("../17.03", "", "pin '../17.03' is not allowed"),
        ("1.10", "", f"{ANNOTATED}: pin 1.10 names a docker version the runtime mappings never list for any "
                     "Kubernetes minor (from m, which list 1.12, 17.03, 17.06)"),
        (None, "18.09", "[runtime] pin: pin 18.09 names a docker version the runtime mappings never list"),
        ("1.10", "17.03", "pin 1.10 names a docker version"),  # a bad annotation is not replaced by the key
    ],
    ids=["word", "v-prefix", "blank", "traversal", "never-listed", "key-never-listed", "bad-annotation-wins"],
)
def test_resolve_pin_refuses(annotation: str | None, configured: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        strategy.resolve_pin(annotation, ANNOTATED, configured, "[runtime] pin", "docker", LISTED, "m")
    assert message in str(caught.value)


PIN = strategy.Pin("1.12", "the annotation")


@pytest.mark.parametrize(
    ("current", "upcoming", "offered", "expected"),
    [
        ("1632.3.0", None, {"1632.3.0": ["17.03", "1.12"]}, Plan("1.12", ("1632.3.0",))),
        ("1632.3.0", "1688.5.3", {"1688.5.3": ["17.03", "1.12"], "1632.3.0": ["1.12"]},
         Plan("1.12", ("1688.5.3", "1632.3.0"))),
        ("1465.8.0", "1632.3.0", {"1632.3.0": ["1.12"]}, Plan("1.12", ("1632.3.0",))),
    ],
    ids=["pin-over-preference", "pin-for-both-os", "pin-old-os-skipped"],
)
def test_choose_with_a_pin(current: str, upcoming: str | None, offered: Mapping[str, Sequence[str]],
                           expected: Plan) -> None:
    assert strategy.choose(kube_version="v1.8.4", preferred=PREFERRED, mapping_source="m", current_os=current,
                           next_os=upcoming, offered=offered, pin=PIN) == expected


@pytest.mark.parametrize(
    ("offered", "message"),
    [
        ({"1688.5.3": ["17.03"], "1632.3.0": ["1.12"]},
         "docker is pinned to 1.12 (the annotation), which is not offered: the manifest for OS 1688.5.3 offers 17.03"),
        ({"1688.5.3": ["1.12"], "1632.3.0": ["17.03"]},
         "which is not offered: the manifest for OS 1632.3.0 offers 17.03"),
        ({"1688.5.3": ["1.12"]}, "the manifest for OS 1632.3.0 offers none"),
    ],
    ids=["next-os-lacks-it", "running-os-lacks-it", "running-manifest-missing"],
)
def test_a_pin_an_os_cannot_satisfy_fails(offered: Mapping[str, Sequence[str]], message: str) -> None:
    with pytest.raises(NoRuntimeVersion) as caught:
        strategy.choose(kube_version="v1.8.4", preferred=PREFERRED, mapping_source="m", current_os="1632.3.0",
                        next_os="1688.5.3", offered=offered, pin=PIN)
    assert message in str(caught.value)
