"""atomic: complete files or nothing, and no rewrite of identical content."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from torcx_tectonic.edges import atomic

from .helpers import dead_pid


def test_write_atomic_creates_parents_and_sets_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file"
    atomic.write_atomic(target, "text\n", mode=0o600)
    assert target.read_text() == "text\n"
    assert target.stat().st_mode & 0o7777 == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["file"]


def test_write_atomic_replaces_existing_content(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")
    atomic.write_atomic(target, b"new")
    assert target.read_bytes() == b"new"


def test_writer_that_raises_leaves_target_untouched_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("before\n")
    with pytest.raises(RuntimeError, match="boom"), atomic.atomic_writer(target) as handle:
        handle.write(b"half of the new cont")
        raise RuntimeError("boom")
    assert target.read_text() == "before\n"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_writer_that_raises_creates_no_target(tmp_path: Path) -> None:
    target = tmp_path / "file"
    with pytest.raises(KeyboardInterrupt), atomic.atomic_writer(target) as handle:
        handle.write(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_write_if_changed_writes_new_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    assert atomic.write_if_changed(target, "a\n") is True
    assert target.read_text() == "a\n"


def test_write_if_changed_identical_content_returns_false_and_keeps_mtime(tmp_path: Path) -> None:
    target = tmp_path / "file"
    atomic.write_atomic(target, "same\n")
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    inode = target.stat().st_ino
    assert atomic.write_if_changed(target, "same\n") is False
    assert target.stat().st_mtime_ns == 1_000_000_000
    assert target.stat().st_ino == inode


def test_write_if_changed_rewrites_different_content(tmp_path: Path) -> None:
    target = tmp_path / "file"
    atomic.write_atomic(target, "old\n")
    assert atomic.write_if_changed(target, b"new\n") is True
    assert target.read_text() == "new\n"


def test_write_if_changed_fixes_a_wrong_mode(tmp_path: Path) -> None:
    target = tmp_path / "file"
    atomic.write_atomic(target, "same\n", mode=0o600)
    assert atomic.write_if_changed(target, "same\n", mode=0o644) is True
    assert target.stat().st_mode & 0o7777 == 0o644


# --- what a killed writer leaves ---------------------------------------------------------------------

def test_a_temporary_name_carries_the_writers_pid(tmp_path: Path) -> None:
    target = tmp_path / "file"
    with atomic.atomic_writer(target) as handle:
        handle.write(b"x")
        (name,) = [p.name for p in tmp_path.iterdir()]
        match = atomic.TEMPORARY.fullmatch(name)
        assert match is not None and int(match["pid"]) == os.getpid() and name.startswith(".file.")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_remove_stale_removes_temporaries_of_writers_that_are_gone_only(tmp_path: Path) -> None:
    dead = dead_pid()
    stale = [f".tectonic.json.{dead}.ab12cd34.tmp", f".docker:17.03.torcx.tgz.{dead}.link"]
    live = [f".next-profile.{os.getpid()}.zz99yy88.tmp", f".kubelet.env.{os.getpid()}.link"]
    others = ["tectonic.json", ".hidden", "notes.tmp", f".x.{dead}.tmp", "docker:17.03.torcx.tgz"]
    for name in [*stale, *live, *others]:
        (tmp_path / name).write_text("x")
    (tmp_path / f".dir.{dead}.ab12cd34.tmp").mkdir()  # a directory is not a writer's temporary file
    assert atomic.remove_stale(tmp_path) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*live, *others, f".dir.{dead}.ab12cd34.tmp"])


def test_remove_stale_of_a_missing_directory_is_nothing(tmp_path: Path) -> None:
    assert atomic.remove_stale(tmp_path / "missing") == []


def test_make_dirs_syncs_each_new_directory_into_its_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(atomic, "fsync_dir", synced.append)
    (tmp_path / "a").mkdir()
    atomic.make_dirs(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert synced == [tmp_path / "a", tmp_path / "a" / "b"]
    atomic.make_dirs(tmp_path / "a" / "b" / "c")  # already there: nothing to sync
    assert synced == [tmp_path / "a", tmp_path / "a" / "b"]


def test_a_refused_write_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = tmp_path / "store" / "docker:17.03.torcx.tgz"
    target.parent.mkdir()
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device") as raised:
        atomic.write_atomic(target, b"addon")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert list(target.parent.iterdir()) == []


def test_a_placed_link_replaces_the_target_only_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "docker.raw"
    target.symlink_to("/opt/old.raw")
    with atomic.placed(target) as tmp:
        tmp.symlink_to("/opt/new.raw")
        assert os.readlink(target) == "/opt/old.raw"  # readers see the old link until the rename
        assert atomic.TEMPORARY.fullmatch(tmp.name)  # a dead writer's leftover is recognised
    assert os.readlink(target) == "/opt/new.raw"
    assert [p.name for p in tmp_path.iterdir()] == ["docker.raw"]


def test_a_failed_placement_leaves_the_target_and_no_temporary_name(tmp_path: Path) -> None:
    target = tmp_path / "addon.tgz"
    target.write_text("old")
    with pytest.raises(OSError), atomic.placed(target) as tmp:
        tmp.write_text("half")
        raise OSError("the link failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["addon.tgz"]
