"""store: hash-checked installs into versioned stores, listing, and GC of old versioned stores."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from torcx_tectonic.errors import InputError, NetworkError, VerificationError
from torcx_tectonic.torcx import store

from .helpers import sha512

ADDON = b"\x1f\x8b pretend this is a torcx tarball" * 1000


def _chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_addon_filename() -> None:
    assert store.addon_filename("docker", "17.03") == "docker:17.03.torcx.tgz"


@pytest.mark.parametrize(
    ("name", "reference", "what"),
    [
        ("../docker", "17.03", "addon name '../docker'"),
        ("a/b", "17.03", "addon name 'a/b'"),
        ("docker", "../../17.03", "addon reference '../../17.03'"),
        ("docker", "17.03/x", "addon reference '17.03/x'"),
        ("docker", "", "addon reference ''"),
    ],
)
def test_addon_filename_refuses_escaping_names(name: str, reference: str, what: str) -> None:
    with pytest.raises(InputError, match=f"addon: {what} is not allowed"):
        store.addon_filename(name, reference)


def test_versioned_store_is_below_the_user_store(tmp_path: Path) -> None:
    assert store.versioned_store(tmp_path, "1632.3.0") == tmp_path / "1632.3.0"


@pytest.mark.parametrize("version", ["../1632.3.0", "1632.3", "1632.3.0/..", "..", "latest"])
def test_versioned_store_refuses_non_versions(tmp_path: Path, version: str) -> None:
    with pytest.raises(InputError, match=f"versioned store: OS version {version!r} is not"):
        store.versioned_store(tmp_path, version)


def test_install_into_a_versioned_store(tmp_path: Path) -> None:
    target_store = store.versioned_store(tmp_path / "store", "1632.3.0")
    path = store.install_addon(target_store, "docker", "17.03", sha512(ADDON), _chunks(ADDON), "https://b/d.tgz")
    assert path == tmp_path / "store" / "1632.3.0" / "docker:17.03.torcx.tgz"
    assert path.read_bytes() == ADDON
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in target_store.iterdir()) == ["docker:17.03.torcx.tgz"]
    assert store.has_addon(target_store, "docker", "17.03", sha512(ADDON))


def test_second_install_is_unnecessary(tmp_path: Path) -> None:
    target_store = tmp_path / "1632.3.0"
    assert not store.has_addon(target_store, "docker", "17.03", sha512(ADDON))
    store.install_addon(target_store, "docker", "17.03", sha512(ADDON), _chunks(ADDON), "u")
    mtime = (target_store / "docker:17.03.torcx.tgz").stat().st_mtime_ns
    assert store.has_addon(target_store, "docker", "17.03", sha512(ADDON))
    assert (target_store / "docker:17.03.torcx.tgz").stat().st_mtime_ns == mtime


def test_has_addon_is_false_for_a_file_with_another_hash(tmp_path: Path) -> None:
    (tmp_path / "docker:17.03.torcx.tgz").write_bytes(b"corrupt")
    assert not store.has_addon(tmp_path, "docker", "17.03", sha512(ADDON))
    assert not store.has_addon(tmp_path, "docker", "1.12", sha512(b"corrupt"))


def test_has_addon_is_false_for_a_directory(tmp_path: Path) -> None:
    (tmp_path / "docker:17.03.torcx.tgz").mkdir()
    assert not store.has_addon(tmp_path, "docker", "17.03", sha512(ADDON))


def test_wrong_hash_stores_nothing_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target_store = tmp_path / "1632.3.0"
    with pytest.raises(VerificationError) as caught:
        store.install_addon(
            target_store, "docker", "17.03", sha512(b"other"), _chunks(ADDON), "https://bucket/docker:17.03.torcx.tgz"
        )
    message = str(caught.value)
    assert message.startswith("https://bucket/docker:17.03.torcx.tgz: sha512 mismatch for docker:17.03.torcx.tgz")
    assert f"expects {sha512(b'other')[:16]}" in message
    assert f"the download has {sha512(ADDON)[:16]}" in message
    assert "nothing was stored" in message
    assert list(target_store.iterdir()) == []


def test_wrong_hash_keeps_the_existing_addon(tmp_path: Path) -> None:
    store.install_addon(tmp_path, "docker", "17.03", sha512(b"good"), [b"good"], "u")
    with pytest.raises(VerificationError):
        store.install_addon(tmp_path, "docker", "17.03", sha512(b"good"), [b"evil"], "u")
    assert (tmp_path / "docker:17.03.torcx.tgz").read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["docker:17.03.torcx.tgz"]


def test_broken_download_stores_nothing(tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield ADDON[:100]
        raise NetworkError("docker:17.03.torcx.tgz: download broke off after 100 bytes")

    with pytest.raises(NetworkError, match="broke off"):
        store.install_addon(tmp_path, "docker", "17.03", sha512(ADDON), broken(), "u")
    assert list(tmp_path.iterdir()) == []


def test_traversal_in_install_writes_nothing(tmp_path: Path) -> None:
    target_store = tmp_path / "store" / "1632.3.0"
    with pytest.raises(InputError, match="addon reference '../../../x' is not allowed"):
        store.install_addon(target_store, "docker", "../../../x", sha512(ADDON), _chunks(ADDON), "u")
    assert list(tmp_path.iterdir()) == []


def test_list_addons(tmp_path: Path) -> None:
    assert store.list_addons(tmp_path / "missing") == []
    for name in (
        "docker:17.03.torcx.tgz",
        "docker:1.12.torcx.tgz",
        "rkt:1.0.torcx.tgz",
        "README",
        "noref.torcx.tgz",
        ".docker:17.03.torcx.tgz.abc.tmp",
    ):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir:1.0.torcx.tgz").mkdir()
    assert store.list_addons(tmp_path) == [("docker", "1.12"), ("docker", "17.03"), ("rkt", "1.0")]


# --- GC -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "current", "expected"),
    [
        (["1520.3.0", "1632.3.0", "1688.5.3"], "1632.3.0", ["1520.3.0"]),
        (["1632.3.0", "1688.5.3"], "1632.3.0", []),
        (["999.0.0", "1000.0.0", "1632.2.9", "1632.3.0"], "1632.3.0", ["1000.0.0", "1632.2.9", "999.0.0"]),
        (
            ["foo", "docker:17.03.torcx.tgz", ".gc-1520.3.0", "1520.3", "1520.3.0.1", "1520.3.0-rc1", "latest"],
            "1632.3.0",
            [],
        ),
        (["v1520.3.0", "01520.3.0", "1520.03.0", " 1520.3.0"], "1632.3.0", []),
        ([], "1632.3.0", []),
    ],
    ids=["older-only", "current-and-newer-kept", "numeric-order", "non-versions-kept", "non-canonical-kept", "empty"],
)
def test_select_gc(entries: list[str], current: str, expected: list[str]) -> None:
    assert store.select_gc(entries, current) == expected


def test_select_gc_with_a_bad_current_version() -> None:
    with pytest.raises(InputError, match="current OS: OS version '../1.2.3' is not"):
        store.select_gc(["1520.3.0"], "../1.2.3")


def _populate(user: Path) -> None:
    for version in ("1520.3.0", "1576.4.0", "1632.3.0", "1688.5.3"):
        (user / version).mkdir(parents=True)
        (user / version / "docker:17.03.torcx.tgz").write_bytes(b"x")
    (user / "docker:1.12.torcx.tgz").write_bytes(b"unversioned addon")
    (user / "foo").mkdir()
    (user / "1400.0.0").write_bytes(b"a file named like a version")
    outside = user.parent / "outside-1300.0.0"
    (outside / "keep").mkdir(parents=True)
    (user / "1300.0.0").symlink_to(outside)


def test_gc_removes_only_older_versioned_stores(tmp_path: Path) -> None:
    user = tmp_path / "store"
    _populate(user)
    assert store.gc_versioned_stores(user, "1632.3.0") == ["1520.3.0", "1576.4.0"]
    assert sorted(p.name for p in user.iterdir()) == [
        "1300.0.0",
        "1400.0.0",
        "1632.3.0",
        "1688.5.3",
        "docker:1.12.torcx.tgz",
        "foo",
    ]
    assert (user / "1632.3.0" / "docker:17.03.torcx.tgz").exists()
    assert (user / "1688.5.3" / "docker:17.03.torcx.tgz").exists()
    assert (user / "docker:1.12.torcx.tgz").read_bytes() == b"unversioned addon"
    assert (user / "1400.0.0").read_bytes() == b"a file named like a version"
    assert (user / "1300.0.0").is_symlink()
    assert (tmp_path / "outside-1300.0.0" / "keep").is_dir()


def test_gc_twice_removes_nothing_the_second_time(tmp_path: Path) -> None:
    user = tmp_path / "store"
    _populate(user)
    store.gc_versioned_stores(user, "1632.3.0")
    before = sorted(os.listdir(user))
    assert store.gc_versioned_stores(user, "1632.3.0") == []
    assert sorted(os.listdir(user)) == before


def test_gc_cleans_leftovers_of_an_interrupted_gc(tmp_path: Path) -> None:
    user = tmp_path / "store"
    (user / ".gc-1520.3.0" / "half").mkdir(parents=True)
    (user / "1632.3.0").mkdir()
    (user / ".gc-notes").write_text("a file, not a leftover directory")
    assert store.gc_versioned_stores(user, "1632.3.0") == []
    assert sorted(p.name for p in user.iterdir()) == [".gc-notes", "1632.3.0"]


def test_gc_without_a_user_store(tmp_path: Path) -> None:
    assert store.gc_versioned_stores(tmp_path / "missing", "1632.3.0") == []


def test_gc_after_an_interrupted_gc_of_the_same_store(tmp_path: Path) -> None:
    # killed between the rename and the delete, then the store reappeared: no collision
    user = tmp_path / "store"
    (user / ".gc-1520.3.0" / "half").mkdir(parents=True)
    (user / "1520.3.0").mkdir()
    (user / "1520.3.0" / "docker:1.12.torcx.tgz").write_bytes(b"x")
    (user / "1632.3.0").mkdir()
    assert store.gc_versioned_stores(user, "1632.3.0") == ["1520.3.0"]
    assert sorted(p.name for p in user.iterdir()) == ["1632.3.0"]


def test_gc_leaves_a_symlink_that_looks_like_a_leftover(tmp_path: Path) -> None:
    user = tmp_path / "store"
    (user / "1632.3.0").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep").write_text("not ours")
    (user / ".gc-link").symlink_to(tmp_path / "elsewhere")
    assert store.gc_versioned_stores(user, "1632.3.0") == []
    assert (tmp_path / "elsewhere" / "keep").is_file() and (user / ".gc-link").is_symlink()


def test_an_addon_is_hashed_while_it_is_written_whatever_its_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40_000  # about 10 MiB, more chunks than the hashing queue holds
    chunks = [data[i:i + 65_536] for i in range(0, len(data), 65_536)] + [b""]
    path = store.install_addon(tmp_path, "docker", "17.03", sha512(data), iter(chunks), "u")
    assert path.read_bytes() == data


def test_a_download_that_breaks_off_leaves_nothing_and_no_thread(tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        for _ in range(3 * store.HASH_QUEUE_CHUNKS):
            yield b"x" * 65_536
        raise NetworkError("docker:17.03.torcx.tgz: download from u broke off after 786432 bytes")

    before = threading.active_count()
    with pytest.raises(NetworkError, match="broke off"):
        store.install_addon(tmp_path, "docker", "17.03", sha512(b"anything"), broken(), "u")
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() == before
