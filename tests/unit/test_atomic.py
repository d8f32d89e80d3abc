"""atomic: complete files or nothing, and no rewrite of identical content."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from torcx_tectonic import atomic


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
