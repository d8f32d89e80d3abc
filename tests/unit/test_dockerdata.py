"""node.dockerdata: the marker that arranges a reset, and the reset itself (rename, then delete)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from torcx_tectonic.errors import InputError
from torcx_tectonic.node import dockerdata


class Node:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.marker = root / "var" / "lib" / "torcx-tectonic" / "docker-reset-needed"
        self.data = root / "var" / "lib" / "docker"
        (self.data / "overlay2" / "abc").mkdir(parents=True)
        (self.data / "image").mkdir()
        (self.data / "engine-id").write_text("x")

    def contents(self) -> list[str]:
        return sorted(str(p.relative_to(self.data)) for p in self.data.rglob("*"))


def test_arrange_writes_the_marker_once(tmp_path: Path) -> None:
    marker = tmp_path / "state" / "docker-reset-needed"
    assert dockerdata.arrange(marker, "17.03", "1.12") is True
    assert json.loads(marker.read_text()) == {"from": "17.03", "to": "1.12"}
    mtime = marker.stat().st_mtime_ns
    assert dockerdata.arrange(marker, "17.03", "1.12") is False
    assert marker.stat().st_mtime_ns == mtime
    assert dockerdata.arrange(marker, None, "17.03") is True
    assert json.loads(marker.read_text()) == {"from": None, "to": "17.03"}


def test_arrange_replaces_a_corrupt_marker(tmp_path: Path) -> None:
    marker = tmp_path / "docker-reset-needed"
    marker.write_text("{half")
    assert dockerdata.arrange(marker, "1.12", "17.03") is True
    assert json.loads(marker.read_text()) == {"from": "1.12", "to": "17.03"}


def test_no_marker_no_reset(tmp_path: Path) -> None:
    node = Node(tmp_path)
    before = node.contents()
    assert dockerdata.reset(node.marker, node.data, "17.03") == []
    assert node.contents() == before


@pytest.mark.parametrize("booted", ["17.03", None], ids=["expected-docker-booted", "no-torcx-record"])
def test_reset_empties_the_data_and_removes_the_marker(tmp_path: Path, booted: str | None) -> None:
    node = Node(tmp_path)
    dockerdata.arrange(node.marker, "1.12", "17.03")
    assert dockerdata.reset(node.marker, node.data, booted) == ["engine-id", "image", "overlay2"]
    assert node.data.is_dir()
    assert node.contents() == []
    assert node.data.stat().st_mode & 0o777 == 0o711
    assert not node.marker.exists()
    assert sorted(p.name for p in node.data.parent.iterdir()) == ["docker", "torcx-tectonic"]


def test_reset_when_booted_docker_differs_leaves_data_and_marker(tmp_path: Path) -> None:
    node = Node(tmp_path)
    dockerdata.arrange(node.marker, "1.12", "17.03")
    before = node.contents()
    assert dockerdata.reset(node.marker, node.data, "1.12") == []
    assert node.contents() == before
    assert node.marker.exists()


def test_reset_finishes_an_interrupted_reset(tmp_path: Path) -> None:
    node = Node(tmp_path)
    dockerdata.arrange(node.marker, "1.12", "17.03")
    # killed after the rename: the data sits under the old name and /var/lib/docker is gone
    old = node.data.with_name("docker" + dockerdata.OLD_SUFFIX)
    os.rename(node.data, old)
    assert dockerdata.reset(node.marker, node.data, "17.03") == ["engine-id", "image", "overlay2"]
    assert not old.exists()
    assert node.data.is_dir() and node.contents() == []
    assert not node.marker.exists()


def test_reset_after_an_interrupted_reset_and_a_docker_that_started_meanwhile(tmp_path: Path) -> None:
    # killed while deleting the moved-aside data; the unit failed, so Docker started and made a new data
    # directory: the next reset removes both (a rename onto the leftover would have failed, every boot)
    node = Node(tmp_path)
    dockerdata.arrange(node.marker, "1.12", "17.03")
    old = node.data.with_name("docker" + dockerdata.OLD_SUFFIX)
    os.rename(node.data, old)
    (node.data / "containers").mkdir(parents=True)
    assert dockerdata.reset(node.marker, node.data, "17.03") == ["containers", "engine-id", "image", "overlay2"]
    assert not old.exists() and node.data.is_dir() and node.contents() == []
    assert not node.marker.exists()


def test_remove_moved_aside_deletes_only_that_directory(tmp_path: Path) -> None:
    node = Node(tmp_path)
    assert dockerdata.remove_moved_aside(node.data) == []
    old = node.data.with_name("docker" + dockerdata.OLD_SUFFIX)
    (old / "image").mkdir(parents=True)
    assert dockerdata.remove_moved_aside(node.data) == [old]
    assert not old.exists() and node.data.is_dir()


def test_reset_without_a_data_directory_creates_it(tmp_path: Path) -> None:
    marker, data = tmp_path / "marker", tmp_path / "docker"
    dockerdata.arrange(marker, None, "17.03")
    assert dockerdata.reset(marker, data, "17.03") == []
    assert data.is_dir()
    assert not marker.exists()


@pytest.mark.parametrize(
    "content", ["{not json", '["17.03"]', '"17.03"', "null"], ids=["not-json", "list", "string", "null"]
)
def test_malformed_marker_is_an_input_error_and_data_is_kept(tmp_path: Path, content: str) -> None:
    node = Node(tmp_path)
    node.marker.parent.mkdir(parents=True)
    node.marker.write_text(content)
    before = node.contents()
    with pytest.raises(InputError) as caught:
        dockerdata.reset(node.marker, node.data, "17.03")
    assert str(caught.value).startswith(f"{node.marker}")
    assert 'expected a JSON object {"from": ..., "to": ...}' in str(caught.value)
    assert node.contents() == before
    assert node.marker.read_text() == content
