"""The kubelet version under Kubernetes' version-skew policy: a table."""

from __future__ import annotations

import pytest

from torcx_tectonic.cluster import skew
from torcx_tectonic.errors import InputError


def v(text: str) -> skew.Version:
    found = skew.image_version(text)
    assert found is not None
    return found


OFFERED = ("v1.26.9", "v1.27.3", "v1.28.5", "v1.29.1", "v1.29.8", "v1.30.2", "v1.30.4", "v1.31.0", "v1.32.1")


@pytest.mark.parametrize(("api", "current", "offered", "chosen", "why"), [
    ("v1.30.4", None, OFFERED, "v1.30.4", "the api-server's version v1.30.4"),
    ("v1.30.4+k3s1", None, OFFERED, "v1.30.4", "the api-server's version"),
    ("v1.30.5", None, OFFERED, "v1.30.4", "the newest offered within 3 minors below the api-server's v1.30.5"),
    ("v1.30.3", None, OFFERED, "v1.30.2", "(v1.30.3 is not offered)"),  # never newer than the api-server
    ("v1.33.0", None, ("v1.30.2",), "v1.30.2", "within 3 minors"),  # 1.28+: three minors
    ("v1.27.3", None, ("v1.26.9", "v1.25.0"), "v1.26.9", "within 2 minors"),
    ("v1.31.0", "v1.30.4", OFFERED, "v1.31.0", "the api-server's version"),  # one minor up
    ("v1.32.1", "v1.30.4", OFFERED, "v1.31.0", "one minor above the node's kubelet v1.30.4 at a time"),
    ("v1.32.1", "v1.29.1", OFFERED, "v1.30.4", "the newest offered of 1.30"),
    ("v1.30.4", "v1.31.0", OFFERED, "v1.30.4", "the api-server's version"),  # a kubelet ahead comes down
    ("v1.30.4", "v1.30.4", OFFERED, "v1.30.4", "the api-server's version"),
    ("v1.31.0", "v1.30.4", ("v1.29.8", "v1.30.4"), "v1.30.4", "the newest offered"),  # never below the node's
], ids=["exact", "git-suffix", "patch-missing", "never-newer", "skew-3", "skew-2-before-1.28", "one-minor",
        "one-minor-at-a-time", "one-minor-newest-patch", "ahead-comes-down", "same", "not-below-current"])
def test_the_kubelet_version_under_the_skew_policy(api: str, current: str | None, offered: tuple[str, ...],
                                                   chosen: str, why: str) -> None:
    found, reason = skew.choose_kubelet(skew.api_version(api, "api-server"), [v(o) for o in offered],
                                        v(current) if current else None)
    assert str(found) == chosen
    assert why in reason


@pytest.mark.parametrize(("api", "offered", "message"), [
    ("v1.33.0", ("v1.29.8",), "the skew policy allows 1.30 to v1.33.0; offered: v1.29.8"),
    ("v1.27.0", ("v1.24.9", "v1.28.0"), "allows 1.25 to v1.27.0; offered: v1.24.9, v1.28.0"),
    ("v1.30.4", (), "offered: none"),
    ("v2.0.0", ("v1.30.4",), "offered: v1.30.4"),
], ids=["too-old", "too-old-or-newer", "nothing", "other-major"])
def test_no_allowed_kubelet_image_is_an_error_naming_the_range_and_the_offer(api: str, offered: tuple[str, ...],
                                                                            message: str) -> None:
    with pytest.raises(skew.NoKubeletVersion, match=message.replace(".", r"\.")):
        skew.choose_kubelet(skew.api_version(api, "api-server"), [v(o) for o in offered], None)


def test_versions_are_checked_against_their_grammar() -> None:
    assert skew.image_version("v1.30.4") == skew.Version(1, 30, 4)
    for bad in ("1.30.4", "v1.30", "v1.030.4", "v1.30.4-rc.0", "v1.30.4\n"):
        assert skew.image_version(bad) is None, bad
    with pytest.raises(InputError, match="api-server: Kubernetes version 'v1.30' is not allowed"):
        skew.api_version("v1.30", "api-server")
    assert skew.max_skew(skew.Version(1, 27, 0)) == 2 and skew.max_skew(skew.Version(1, 28, 0)) == 3
