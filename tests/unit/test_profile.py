"""profile: v0/v1 documents, image replacement, which profile is updated, idempotence, bad profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from torcx_tectonic.errors import InputError
from torcx_tectonic.torcx import profile
from torcx_tectonic.torcx.profile import Image, Profile

V0 = "profile-manifest-v0"
V1 = "profile-manifest-v1"


def _doc(kind: str, *images: dict[str, object]) -> str:
    return json.dumps({"kind": kind, "value": {"images": list(images)}})


# --- pure ------------------------------------------------------------------------------


def test_parse_v0() -> None:
    parsed = profile.parse_profile(_doc(V0, {"name": "docker", "reference": "1.12"}), "p.json")
    assert parsed == Profile(V0, (Image("docker", "1.12"),))


def test_parse_v1_keeps_remote() -> None:
    parsed = profile.parse_profile(_doc(V1, {"name": "docker", "reference": "1.12", "remote": "r"}), "p.json")
    assert parsed == Profile(V1, (Image("docker", "1.12", "r"),))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{", "not valid JSON"),
        ("[]", "kind is None; expected one of profile-manifest-v0, profile-manifest-v1"),
        (json.dumps({"kind": "profile-manifest-v2", "value": {"images": []}}), "kind is 'profile-manifest-v2'"),
        (json.dumps({"kind": V0}), "expected value.images to be a list"),
        (json.dumps({"kind": V0, "value": {"images": {}}}), "expected value.images to be a list"),
        (_doc(V0, {"name": "docker"}), "value.images[0]: expected an object with string 'name' and 'reference'"),
        (json.dumps({"kind": V0, "value": {"images": ["docker:1.12"]}}), "value.images[0]: expected an object"),
        (
            _doc(V0, {"name": "a", "reference": "1"}, {"name": "docker", "reference": 1}),
            "value.images[1]: expected an object with string 'name' and 'reference'",
        ),
        (_doc(V1, {"name": "docker", "reference": "1.12", "remote": 3}), "'remote' is 3; expected a string"),
    ],
    ids=[
        "not-json",
        "not-object",
        "unknown-kind",
        "no-value",
        "images-not-list",
        "no-reference",
        "image-not-object",
        "reference-not-string",
        "remote-not-string",
    ],
)
def test_malformed_profiles_name_the_file_and_the_problem(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        profile.parse_profile(text, "/etc/torcx/profiles/custom.json")
    message = str(caught.value)
    assert message.startswith("/etc/torcx/profiles/custom.json:")
    assert expected in message


def test_render_round_trips_v0_and_v1() -> None:
    for value in (
        Profile(V0, (Image("docker", "17.03"),)),
        Profile(V1, (Image("rkt", "1.0", "remote-x"), Image("docker", "17.03"))),
    ):
        assert profile.parse_profile(profile.render_profile(value), "x") == value


def test_render_writes_remote_only_when_set() -> None:
    rendered = json.loads(profile.render_profile(Profile(V1, (Image("a", "1", "r"), Image("b", "2")))))
    assert rendered == {
        "kind": V1,
        "value": {"images": [{"name": "a", "reference": "1", "remote": "r"}, {"name": "b", "reference": "2"}]},
    }


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (None, Profile(V0, (Image("docker", "17.03"),))),
        (Profile(V0, ()), Profile(V0, (Image("docker", "17.03"),))),
        (Profile(V0, (Image("docker", "1.12"),)), Profile(V0, (Image("docker", "17.03"),))),
        (
            Profile(V0, (Image("rkt", "1"), Image("docker", "1.12"), Image("x", "2"))),
            Profile(V0, (Image("rkt", "1"), Image("docker", "17.03"), Image("x", "2"))),
        ),
        (Profile(V0, (Image("rkt", "1"),)), Profile(V0, (Image("rkt", "1"), Image("docker", "17.03")))),
        (
            Profile(V1, (Image("rkt", "1", "remote-r"), Image("docker", "1.12"))),
            Profile(V1, (Image("rkt", "1", "remote-r"), Image("docker", "17.03"))),
        ),
        (Profile(V0, (Image("docker", "17.03"),)), Profile(V0, (Image("docker", "17.03"),))),
    ],
    ids=["no-profile", "empty", "replace", "replace-in-place", "append", "v1-keeps-kind-and-remotes", "unchanged"],
)
def test_with_image(before: Profile | None, expected: Profile) -> None:
    assert profile.with_image(before, "docker", "17.03") == expected


@pytest.mark.parametrize(
    ("next_profile", "expected"),
    [(None, "tectonic"), ("", "tectonic"), ("vendor", "tectonic"), ("custom", "custom"), ("tectonic", "tectonic")],
)
def test_target_profile_name(next_profile: str | None, expected: str) -> None:
    assert profile.target_profile_name(next_profile, "tectonic") == expected


def test_selected_reference() -> None:
    value = Profile(V0, (Image("rkt", "1"), Image("docker", "17.03")))
    assert profile.selected_reference(value, "docker") == "17.03"
    assert profile.selected_reference(value, "podman") is None
    assert profile.selected_reference(None, "docker") is None


# --- on disk --------------------------------------------------------------------------------


class Node:
    def __init__(self, root: Path) -> None:
        self.user = root / "etc" / "torcx" / "profiles"
        self.vendor = root / "usr" / "share" / "torcx" / "profiles"
        self.next = root / "etc" / "torcx" / "next-profile"
        self.vendor.mkdir(parents=True)
        (self.vendor / "vendor.json").write_text(_doc(V0, {"name": "docker", "reference": "com.coreos.cl"}))

    def select(self, reference: str = "17.03", configured: str = "tectonic") -> tuple[str, list[Path]]:
        return profile.select_image(
            user_profiles=self.user,
            vendor_profiles=self.vendor,
            next_profile_file=self.next,
            configured=configured,
            name="docker",
            reference=reference,
        )

    def user_profile(self, name: str) -> Any:
        return json.loads((self.user / f"{name}.json").read_text())

    def snapshot(self) -> dict[str, bytes]:
        root = self.next.parent
        return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("next_content", [None, "", "vendor\n"], ids=["no-next-profile", "empty", "vendor"])
def test_vendor_or_no_next_profile_creates_the_configured_profile(tmp_path: Path, next_content: str | None) -> None:
    node = Node(tmp_path)
    if next_content is not None:
        node.next.parent.mkdir(parents=True)
        node.next.write_text(next_content)
    name, changed = node.select()
    assert name == "tectonic"
    assert changed == [node.user / "tectonic.json", node.next]
    assert node.user_profile("tectonic") == {
        "kind": V0,
        "value": {"images": [{"name": "docker", "reference": "17.03"}]},
    }
    assert node.next.read_text() == "tectonic\n"
    assert json.loads((node.vendor / "vendor.json").read_text())["value"]["images"][0]["reference"] == "com.coreos.cl"


def test_non_vendor_next_profile_is_updated_keeping_kind_and_other_images(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.user.mkdir(parents=True)
    (node.user / "custom.json").write_text(
        _doc(V1, {"name": "rkt", "reference": "1.0", "remote": "r"}, {"name": "docker", "reference": "1.12"})
    )
    node.next.write_text("custom\n")
    name, changed = node.select()
    assert (name, changed) == ("custom", [node.user / "custom.json"])
    assert node.user_profile("custom") == {
        "kind": V1,
        "value": {
            "images": [{"name": "rkt", "reference": "1.0", "remote": "r"}, {"name": "docker", "reference": "17.03"}]
        },
    }
    assert not (node.user / "tectonic.json").exists()


def test_existing_configured_profile_keeps_its_other_images(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.user.mkdir(parents=True)
    (node.user / "tectonic.json").write_text(
        _doc(V0, {"name": "docker", "reference": "1.12"}, {"name": "tools", "reference": "2"})
    )
    name, _ = node.select()
    assert name == "tectonic"
    assert node.user_profile("tectonic")["value"]["images"] == [
        {"name": "docker", "reference": "17.03"},
        {"name": "tools", "reference": "2"},
    ]


def test_next_profile_only_in_the_vendor_directory_is_copied_to_the_user_directory(tmp_path: Path) -> None:
    node = Node(tmp_path)
    (node.vendor / "oem.json").write_text(_doc(V1, {"name": "oem-tools", "reference": "3"}))
    node.next.parent.mkdir(parents=True)
    node.next.write_text("oem")
    name, changed = node.select()
    assert name == "oem"
    assert changed == [node.user / "oem.json", node.next]
    assert node.user_profile("oem") == {
        "kind": V1,
        "value": {"images": [{"name": "oem-tools", "reference": "3"}, {"name": "docker", "reference": "17.03"}]},
    }
    assert node.next.read_text() == "oem\n"


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.select()
    before = node.snapshot()
    mtimes = {path: Path(path).stat().st_mtime_ns for path in before}
    assert node.select() == ("tectonic", [])
    assert node.snapshot() == before
    assert {path: Path(path).stat().st_mtime_ns for path in before} == mtimes


def test_new_reference_changes_only_the_profile(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.select("1.12")
    assert node.select("17.03") == ("tectonic", [node.user / "tectonic.json"])
    assert node.user_profile("tectonic")["value"]["images"] == [{"name": "docker", "reference": "17.03"}]


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "x y"])
def test_next_profile_with_an_escaping_name_is_refused_and_nothing_written(tmp_path: Path, name: str) -> None:
    node = Node(tmp_path)
    node.next.parent.mkdir(parents=True)
    node.next.write_text(name + "\n")
    before = node.snapshot()
    with pytest.raises(InputError) as caught:
        node.select()
    assert f"{node.next}: profile name {name!r} is not allowed" in str(caught.value)
    assert node.snapshot() == before
    assert not node.user.exists()


def test_malformed_user_profile_is_refused_and_untouched(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.user.mkdir(parents=True)
    (node.user / "custom.json").write_text('{"kind": "profile-manifest-v0", "value": {"images": [')
    node.next.write_text("custom\n")
    before = node.snapshot()
    with pytest.raises(InputError, match=f"{node.user / 'custom.json'}:1: not valid JSON"):
        node.select()
    assert node.snapshot() == before


def test_load_profile_refuses_an_escaping_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="profile name '../x' is not allowed"):
        profile.load_profile(tmp_path, "../x")
    assert profile.load_profile(tmp_path, "missing") is None


def test_read_next_profile(tmp_path: Path) -> None:
    path = tmp_path / "next-profile"
    assert profile.read_next_profile(path) is None
    path.write_text("  \n")
    assert profile.read_next_profile(path) is None
    path.write_text("custom\n")
    assert profile.read_next_profile(path) == "custom"


def test_booted_reference(tmp_path: Path) -> None:
    applied = tmp_path / "applied.json"
    applied.write_text(_doc(V0, {"name": "docker", "reference": "1.12"}))
    metadata = tmp_path / "torcx"
    metadata.write_text(
        f'TORCX_LOWER_PROFILES="vendor"\nTORCX_UPPER_PROFILE="tectonic"\n'
        f'TORCX_PROFILE_PATH="{applied}"\nTORCX_BINDIR="/run/torcx/bin"\n'
    )
    assert profile.booted_reference(metadata, "docker") == "1.12"
    assert profile.booted_reference(metadata, "rkt") is None


@pytest.mark.parametrize(
    "content",
    [None, "TORCX_BINDIR=/run/torcx/bin\n", "TORCX_PROFILE_PATH=/nonexistent.json\n"],
    ids=["no-metadata", "no-profile-path", "profile-gone"],
)
def test_booted_reference_without_a_record(tmp_path: Path, content: str | None) -> None:
    metadata = tmp_path / "torcx"
    if content is not None:
        metadata.write_text(content)
    assert profile.booted_reference(metadata, "docker") is None


def test_booted_reference_with_a_malformed_applied_profile(tmp_path: Path) -> None:
    applied = tmp_path / "applied.json"
    applied.write_text("not json")
    metadata = tmp_path / "torcx"
    metadata.write_text(f"TORCX_PROFILE_PATH={applied}\n")
    with pytest.raises(InputError, match=f"{applied}:1: not valid JSON"):
        profile.booted_reference(metadata, "docker")


# --- what torcx itself writes and accepts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"kind": "profile-manifest-v0", "value": {"images": null}}', Profile(V0, ())),
        ('{"kind": "profile-manifest-v1", "value": {"images": null}}', Profile(V1, ())),
        ("", Profile(V0, ())),
        ("\n  \n", Profile(V0, ())),
        (_doc(V0, {"name": "docker", "reference": "1.12", "remote": "r"}), Profile(V0, (Image("docker", "1.12"),))),
    ],
    ids=["images-null-v0", "images-null-v1", "empty-file", "blank-file", "remote-in-v0-ignored"],
)
def test_what_torcx_writes_is_read_as_torcx_reads_it(text: str, expected: Profile) -> None:
    assert profile.parse_profile(text, "/run/torcx/profile.json") == expected


def test_a_sealed_run_profile_without_images_is_booted_nothing(tmp_path: Path) -> None:
    applied = tmp_path / "profile.json"
    applied.write_text('{"kind": "profile-manifest-v0", "value": {"images": null}}')
    metadata = tmp_path / "torcx"
    metadata.write_text(f"TORCX_PROFILE_PATH={applied}\n")
    assert profile.booted_reference(metadata, "docker") is None


def test_an_empty_profile_file_is_filled_and_written_as_v0(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.user.mkdir(parents=True)
    (node.user / "custom.json").write_text("")
    node.next.write_text("custom\n")
    assert node.select() == ("custom", [node.user / "custom.json"])
    assert node.user_profile("custom") == {"kind": V0, "value": {"images": [{"name": "docker", "reference": "17.03"}]}}


def test_a_v0_remote_is_dropped_when_the_profile_is_rewritten(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.user.mkdir(parents=True)
    (node.user / "custom.json").write_text(_doc(V0, {"name": "tools", "reference": "2", "remote": "r"},
                                                {"name": "docker", "reference": "1.12"}))
    node.next.write_text("custom\n")
    node.select()
    assert node.user_profile("custom")["value"]["images"] == [{"name": "tools", "reference": "2"},
                                                              {"name": "docker", "reference": "17.03"}]


def test_next_profile_with_a_json_suffix_names_the_same_profile(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.user.mkdir(parents=True)
    (node.user / "custom.json").write_text(_doc(V0, {"name": "docker", "reference": "1.12"}))
    node.next.write_text("custom.json\n")
    assert profile.read_next_profile(node.next) == "custom"
    assert node.select() == ("custom", [node.user / "custom.json", node.next])
    assert not (node.user / "custom.json.json").exists()
    assert node.user_profile("custom")["value"]["images"] == [{"name": "docker", "reference": "17.03"}]
    assert node.next.read_text() == "custom\n"



def test_a_relative_profile_path_in_the_metadata_is_refused(tmp_path: Path) -> None:
    metadata = tmp_path / "torcx"
    metadata.write_text("TORCX_PROFILE_PATH=profile.json\n")
    with pytest.raises(InputError, match="TORCX_PROFILE_PATH 'profile.json' is not an absolute path"):
        profile.booted_reference(metadata, "docker")
