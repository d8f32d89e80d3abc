"""source: file:// manifests and addons (a local mirror), read with the bucket's checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from torcx_tectonic.config import Config
from torcx_tectonic.edges import source
from torcx_tectonic.errors import InputError, NetworkError, VerificationError
from torcx_tectonic.torcx import bucket as bucket_module
from torcx_tectonic.torcx.bucket import Bucket
from torcx_tectonic.torcx.manifest import parse_package_list

from .helpers import Keys, make_config, sha512

ADDON = b"tarball bytes " * 5000
MANIFEST = json.dumps({"kind": "torcx-package-list-v0", "value": {"packages": [{
    "name": "docker", "versions": [{"version": "17.03", "hash": "sha512-" + sha512(ADDON),
                                    "locations": [{"url": "file:///srv/mirror/docker.tgz"}]}]}]}}).encode()
TEMPLATE = "manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json"


def _mirror(root: Path, keys: Keys | None = None) -> Path:
    """A mirror directory with the manifest of amd64-usr 1632.3.0 (signed with ``keys``)."""
    manifest = root / "manifests/amd64-usr/1632.3.0/torcx_manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(MANIFEST)
    if keys is not None:
        Path(f"{manifest}.asc").write_bytes(keys.sign(MANIFEST))
    return manifest


def _config(root: Path, keyring: Path, verify: str = "yes") -> Config:
    return make_config({"torcx.manifest_url": f"file://{root}/{TEMPLATE}", "torcx.keyring": str(keyring),
                        "torcx.verify_signatures": verify})


# --- the grammar of a file:// URL ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "file:///srv/mirror/manifests/amd64-usr/1632.3.0/torcx_manifest.json",
    "file://localhost/srv/mirror/docker:17.03.torcx.tgz",
    "file:///media/USB_DISK-1/mirror/x.json.asc",
    "file:///var/lib/mirror/a+b@c~d,e=f",
    "file:///srv/...",
])
def test_file_urls_that_name_one_path(url: str) -> None:
    assert source.file_url_problem(url) is None
    assert str(source.file_url_path(url, "x")) == "/" + url.removeprefix("file://").partition("/")[2]


@pytest.mark.parametrize(("url", "problem"), [
    ("file:/srv/mirror/x.json", "it does not begin with file://"),
    ("FILE:///srv/x", "it does not begin with file://"),
    ("file://mirror.example/srv/x", "it names the host 'mirror.example'"),
    ("file://localhost", "it names no path"),
    ("file:///", "its path has a segment ''"),
    ("file:///srv/../etc/shadow", "its path has a segment '..'"),
    ("file:///srv/./x", "its path has a segment '.'"),
    ("file:///srv//x", "its path has a segment ''"),
    ("file:///srv/x/", "its path has a segment ''"),
    ("file:///srv/%2e%2e/etc/shadow", "it holds '%'"),
    ("file:///srv/x?y=1", "it holds '?'"),
    ("file:///srv/x#top", "it holds '#'"),
    ("file:///srv/my mirror/x", "its path segment 'my mirror' holds other characters"),
    ("file:///srv/x\n", "its path segment 'x\\n' holds other characters"),
    ("file:///srv/caf\u00e9", "its path segment 'caf\u00e9' holds other characters"),
    ("file:///" + "x/" * 2100 + "y", "its path is longer than 4096 characters"),
])
def test_file_urls_that_are_refused(url: str, problem: str) -> None:
    assert problem in (source.file_url_problem(url) or "")
    with pytest.raises(InputError) as caught:
        source.file_url_path(url, "manifest for amd64-usr 1632.3.0")
    assert str(caught.value).startswith("manifest for amd64-usr 1632.3.0: ")
    assert f"is not allowed: {problem}" in str(caught.value)
    assert "expected a file:// URL of an absolute path" in str(caught.value)


def test_a_directory_url_may_end_with_a_slash() -> None:
    assert source.file_url_problem("file:///srv/mirror/addons/", directory=True) is None
    assert source.file_url_problem("file:///srv/mirror/addons//", directory=True) == "its path has a segment ''"


def test_places_the_units_cannot_see() -> None:
    assert [source.hidden_from_units(p) for p in ("/home/ops/mirror", "/root", "/tmp/m", "/var/tmp/m",
                                                  "/run/user/0/m", "/srv/mirror", "/homes/m", "/media/usb")] == [
        "/home", "/root", "/tmp", "/var/tmp", "/run/user", None, None, None]


# --- reading ---------------------------------------------------------------------------------------------------


def test_a_file_is_read_whole_and_streamed(tmp_path: Path) -> None:
    path = tmp_path / "docker.tgz"
    path.write_bytes(ADDON)
    assert source.read_file_url(f"file://{path}", "addon", limit=len(ADDON)) == ADDON
    assert b"".join(source.stream_file_url(f"file://{path}", "addon")) == ADDON


def test_a_missing_file_names_the_path_and_the_url(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/gone/torcx_manifest.json"
    with pytest.raises(NetworkError) as caught:
        source.read_file_url(url, "manifest for amd64-usr 1632.3.0", limit=100)
    assert str(caught.value).startswith(
        f"manifest for amd64-usr 1632.3.0: {tmp_path}/gone/torcx_manifest.json does not exist ({url})")
    with pytest.raises(NetworkError, match="does not exist"):
        b"".join(source.stream_file_url(url, "addon"))


def test_a_missing_file_in_a_place_the_units_cannot_see_says_why(tmp_path: Path) -> None:
    with pytest.raises(NetworkError) as caught:
        source.read_file_url("file:///home/ops/mirror/m.json", "manifest", limit=100)
    assert str(caught.value) == (
        "manifest: /home/ops/mirror/m.json does not exist (file:///home/ops/mirror/m.json) (the units run with "
        "ProtectHome=yes and PrivateTmp=yes and cannot see /home: keep a mirror under /srv, /var/lib, /opt, "
        "/media or /mnt)")


def test_a_missing_file_raises_what_the_caller_says(tmp_path: Path) -> None:
    unsigned = VerificationError("not signed")
    with pytest.raises(VerificationError, match="not signed"):
        source.read_file_url(f"file://{tmp_path}/m.json.asc", "signature", limit=100, missing=unsigned)


def test_a_file_under_a_file_is_missing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(NetworkError, match=f"{tmp_path}/file/m.json does not exist"):
        source.read_file_url(f"file://{tmp_path}/file/m.json", "manifest", limit=100)


def test_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    (tmp_path / "m.json").symlink_to(tmp_path / "secret")
    with pytest.raises(NetworkError) as caught:
        source.read_file_url(f"file://{tmp_path}/m.json", "manifest", limit=100)
    assert f"manifest: {tmp_path}/m.json is a symbolic link" in str(caught.value)
    assert "expected a regular file: a file:// URL names the file itself" in str(caught.value)


def test_a_directory_a_fifo_and_a_device_are_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    for path, kind in ((tmp_path, "is a directory"), (tmp_path / "fifo", "is not a regular file"),
                       (Path("/dev/zero"), "is not a regular file")):
        with pytest.raises(NetworkError) as caught:
            source.read_file_url(f"file://{path}", "manifest", limit=100)
        assert str(caught.value) == f"manifest: {path} {kind} (file://{path}); expected a regular file"


def test_a_file_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_bytes(b" " * 101)
    with pytest.raises(NetworkError, match=f"manifest: file://{tmp_path}/m.json is larger than 100 bytes"):
        source.read_file_url(f"file://{tmp_path}/m.json", "manifest", limit=100)
    assert source.read_file_url(f"file://{tmp_path}/m.json", "manifest", limit=101) == b" " * 101


def test_an_unreadable_file_names_the_reason(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text("x")
    (tmp_path / "m.json").chmod(0)
    root = os.geteuid() == 0
    if root:  # root reads any file: read as nobody (the real and saved uid stay root, to come back)
        os.seteuid(65534)
    try:
        with pytest.raises(NetworkError, match="cannot open .*Permission denied"):
            source.read_file_url(f"file://{tmp_path}/m.json", "manifest", limit=100)
    finally:
        if root:
            os.seteuid(0)


def test_a_name_the_kernel_refuses_names_the_reason(tmp_path: Path) -> None:
    long_name = tmp_path / ("m" * 300)
    with pytest.raises(NetworkError, match="cannot open .*File name too long"):
        source.read_file_url(f"file://{long_name}", "manifest", limit=100)


# --- the bucket over file:// ------------------------------------------------------------------------------------


def test_a_signed_manifest_from_a_mirror_directory(tmp_path: Path, keys: Keys) -> None:
    manifest = _mirror(tmp_path, keys)
    with Bucket(_config(tmp_path, keys.keyring)) as bucket:
        fetched = bucket.manifest("amd64-usr", "1632.3.0")
    assert (fetched.url, fetched.raw) == (f"file://{manifest}", MANIFEST)
    assert fetched.signature == Path(f"{manifest}.asc").read_bytes()
    assert fetched.packages.versions_of("docker") == ("17.03",)


def test_a_manifest_without_its_signature_is_refused(tmp_path: Path, keys: Keys) -> None:
    manifest = _mirror(tmp_path)
    with Bucket(_config(tmp_path, keys.keyring)) as bucket, pytest.raises(VerificationError) as caught:
        bucket.manifest("amd64-usr", "1632.3.0")
    assert str(caught.value) == (
        f"manifest for amd64-usr 1632.3.0 (file://{manifest}) is not signed: file://{manifest}.asc does not "
        "exist; expected a detached OpenPGP signature")


def test_a_changed_manifest_is_refused(tmp_path: Path, keys: Keys) -> None:
    manifest = _mirror(tmp_path, keys)
    manifest.write_bytes(MANIFEST.replace(b"17.03", b"17.09"))
    with Bucket(_config(tmp_path, keys.keyring)) as bucket, pytest.raises(VerificationError, match="bad signature"):
        bucket.manifest("amd64-usr", "1632.3.0")


def test_a_missing_manifest_names_its_path(tmp_path: Path, keys: Keys) -> None:
    with Bucket(_config(tmp_path, keys.keyring)) as bucket, pytest.raises(NetworkError) as caught:
        bucket.manifest("arm64-usr", "1688.5.3")
    path = tmp_path / "manifests/arm64-usr/1688.5.3/torcx_manifest.json"
    # (tmp_path is under /tmp, which the units would not see: the message says so too)
    assert str(caught.value).startswith(f"manifest for arm64-usr 1688.5.3: {path} does not exist (file://{path})")


def test_an_oversized_manifest_is_refused_as_over_http(tmp_path: Path, keys: Keys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bucket_module, "MAX_MANIFEST_BYTES", 1000)
    manifest = _mirror(tmp_path)
    manifest.write_bytes(b" " * 5000)
    with Bucket(_config(tmp_path, keys.keyring, verify="no")) as bucket, \
            pytest.raises(NetworkError, match="is larger than 1000 bytes"):
        bucket.manifest("amd64-usr", "1632.3.0")


def test_an_addon_is_streamed_from_the_mirror(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "docker.tgz").write_bytes(ADDON)
    with Bucket(_config(tmp_path, keys.keyring)) as bucket:
        assert b"".join(bucket.download(f"file://{tmp_path}/docker.tgz", "docker:17.03.torcx.tgz")) == ADDON
        with pytest.raises(NetworkError, match=f"docker:17.03.torcx.tgz: {tmp_path}/gone.tgz does not exist"):
            b"".join(bucket.download(f"file://{tmp_path}/gone.tgz", "docker:17.03.torcx.tgz"))
        with pytest.raises(InputError, match="'file:///srv/../x.tgz' is not allowed"):
            b"".join(bucket.download("file:///srv/../x.tgz", "docker:17.03.torcx.tgz"))


def test_a_manifest_may_locate_addons_by_file_url() -> None:
    listed = parse_package_list(MANIFEST, "m.json").package("docker")
    assert listed is not None and listed.versions[0].url() == "file:///srv/mirror/docker.tgz"


def test_a_file_a_unit_may_not_open_in_a_hidden_place_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    # what ProtectHome=yes does: /home is there, but mode 000 to the unit
    def denied(path: object, flags: int) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("torcx_tectonic.edges.source.os.open", denied)
    with pytest.raises(NetworkError) as caught:
        source.read_file_url("file:///home/ops/m.json", "manifest", limit=100)
    assert str(caught.value) == (
        "manifest: cannot open /home/ops/m.json (file:///home/ops/m.json): Permission denied (the units run with "
        "ProtectHome=yes and PrivateTmp=yes and cannot see /home: keep a mirror under /srv, /var/lib, /opt, "
        "/media or /mnt)")
