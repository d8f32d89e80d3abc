"""manifest: parsing torcx-package-list-v0, names that would escape a store, hashes."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from torcx_tectonic import strategy
from torcx_tectonic.errors import InputError
from torcx_tectonic.torcx import manifest

from .helpers import sha512

HASH_A = "sha512-" + "a" * 128
HASH_B = "sha512-" + "b" * 128
DOCUMENT: dict[str, Any] = {
    "kind": "torcx-package-list-v0",
    "value": {
        "packages": [
            {
                "name": "docker",
                "defaultVersion": "1.12",
                "versions": [
                    {
                        "version": "1.12",
                        "hash": HASH_A,
                        "sourcePackage": "app-torcx/docker-1.12.6-r1",
                        "locations": [
                            {"path": "/usr/share/torcx/store/docker:1.12.torcx.tgz"},
                            {"url": "https://bucket.example/docker:1.12.torcx.tgz"},
                        ],
                    },
                    {
                        "version": "17.03",
                        "hash": HASH_B,
                        "locations": [{"url": "https://bucket.example/docker:17.03.torcx.tgz"}],
                    },
                ],
            },
            {"name": "rkt", "versions": []},
        ]
    },
}


def _parse(document: Any) -> manifest.PackageList:
    return manifest.parse_package_list(json.dumps(document).encode(), "https://bucket/m.json")


def test_parses_packages_versions_and_locations() -> None:
    parsed = _parse(DOCUMENT)
    assert parsed.source == "https://bucket/m.json"
    docker = parsed.package("docker")
    assert docker is not None
    assert docker.default_version == "1.12"
    assert parsed.versions_of("docker") == ("1.12", "17.03")
    assert parsed.versions_of("rkt") == ()
    assert parsed.versions_of("podman") == ()
    assert parsed.package("podman") is None
    v112 = docker.find("1.12")
    assert v112 == manifest.PackageVersion(
        version="1.12",
        sha512="a" * 128,
        source_package="app-torcx/docker-1.12.6-r1",
        locations=(
            manifest.Location(path="/usr/share/torcx/store/docker:1.12.torcx.tgz"),
            manifest.Location(url="https://bucket.example/docker:1.12.torcx.tgz"),
        ),
    )
    assert docker.find("1.13") is None


def test_vendor_path_and_url() -> None:
    docker = _parse(DOCUMENT).package("docker")
    assert docker is not None
    v112, v1703 = docker.find("1.12"), docker.find("17.03")
    assert v112 is not None and v1703 is not None
    assert v112.vendor_path() == Path("/usr/share/torcx/store/docker:1.12.torcx.tgz")
    assert v112.url() == "https://bucket.example/docker:1.12.torcx.tgz"
    assert v1703.vendor_path() is None
    assert v112.vendor_path(Path("/other/store")) is None


def test_path_outside_the_vendor_store_is_not_a_vendor_path() -> None:
    doc = copy.deepcopy(DOCUMENT)
    doc["value"]["packages"][0]["versions"][0]["locations"] = [{"path": "/usr/share/torcx/store/sub/docker.tgz"}]
    version = _parse(doc).packages[0].versions[0]
    assert version.vendor_path() is None
    assert version.url() is None


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    """DOCUMENT with the item at ``path`` replaced (or deleted when value is DELETE)."""
    doc = copy.deepcopy(DOCUMENT)
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DELETE = object()
V0 = ["value", "packages", 0, "versions", 0]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"kind": "torcx-package-list-v1", "value": {}},
            "kind is 'torcx-package-list-v1'; expected 'torcx-package-list-v0'",
        ),
        ([1, 2], "kind is None; expected 'torcx-package-list-v0'"),
        (_with(["value"], DELETE), "https://bucket/m.json: missing 'value'"),
        (_with(["value"], []), "https://bucket/m.json.value: expected dict, got list"),
        (_with(["value", "packages"], {}), "value.packages: expected list, got dict"),
        (
            _with(["value", "packages", 0, "name"], "../docker"),
            "value.packages[0]: package name '../docker' is not allowed",
        ),
        (_with(["value", "packages", 0, "name"], "a/b"), "package name 'a/b' is not allowed"),
        (_with(["value", "packages", 0, "name"], ".hidden"), "package name '.hidden' is not allowed"),
        (_with(["value", "packages", 0, "name"], 7), "value.packages[0].name: expected str, got int"),
        (_with(["value", "packages", 0, "versions"], None), "value.packages[0].versions: expected list, got NoneType"),
        (_with([*V0, "version"], "../../etc/passwd"), "versions[0]: version '../../etc/passwd' is not allowed"),
        (_with([*V0, "version"], "1.12/x"), "version '1.12/x' is not allowed"),
        (
            _with([*V0, "version"], "1..12"),
            "version '1..12' is not allowed; expected letters, digits, '.', '_', '+', '-'",
        ),
        (_with([*V0, "version"], ""), "version '' is not allowed"),
        (_with([*V0, "hash"], "a" * 128), "hash: 'aaaa"),
        (_with([*V0, "hash"], "sha256-" + "a" * 64), "is not 'sha512-' followed by 128 lowercase hex digits"),
        (_with([*V0, "hash"], "sha512-" + "A" * 128), "is not 'sha512-' followed by 128 lowercase hex digits"),
        (_with([*V0, "hash"], "sha512-" + "a" * 127), "is not 'sha512-' followed by 128 lowercase hex digits"),
        (_with([*V0, "hash"], "sha512-" + "a" * 128 + "\n"), "is not 'sha512-' followed by 128 lowercase hex"),
        (_with([*V0, "version"], "17.03\n"), "version '17.03\\n' is not allowed"),
        (_with([*V0, "hash"], DELETE), "versions[0]: missing 'hash'"),
        (_with([*V0, "locations"], "https://x"), "versions[0].locations: expected list, got str"),
        (_with([*V0, "locations"], [{}]), "locations[0]: expected 'path' or 'url'"),
        (_with([*V0, "locations"], ["https://x"]), "locations[0]: expected an object with 'path' or 'url'"),
        (
            _with([*V0, "locations"], [{"path": "relative/docker.tgz"}]),
            "locations[0]: path 'relative/docker.tgz' is not allowed; expected an absolute path without '..'",
        ),
        (
            _with([*V0, "locations"], [{"path": "/usr/share/torcx/store/../../../etc/shadow"}]),
            "is not allowed; expected an absolute path without '..'",
        ),
        (
            _with([*V0, "locations"], [{"url": "file:///srv/../etc/shadow"}]),
            "locations[0].url: 'file:///srv/../etc/shadow' is not an http(s) URL, nor a file:// URL",
        ),
        (_with([*V0, "locations"], [{"url": 5}]), "locations[0].url: 5 is not an http(s) URL"),
    ],
)
def test_malformed_manifests_name_source_place_and_expectation(document: Any, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        _parse(document)
    message = str(caught.value)
    assert message.startswith("https://bucket/m.json")
    assert expected in message


@pytest.mark.parametrize(
    "data", [b"", b"{", b"\xff\xfe\x00garbage", b"<html>404</html>"], ids=["empty", "truncated", "binary", "html"]
)
def test_not_json_is_an_input_error(data: bytes) -> None:
    expected = r"^m\.json(:1)?: not (valid JSON|UTF-8 text) .*; expected a torcx-package-list-v0"
    with pytest.raises(InputError, match=expected):
        manifest.parse_package_list(data, "m.json")


@pytest.mark.parametrize("name", ["docker", "17.03", "1.12.6-r1", "v1.8.4+coreos.0", "docker_ce", "a"])
def test_check_name_accepts_safe_names(name: str) -> None:
    assert manifest.check_name(name, "name", "here") == name


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", ".x", "x..y", "", "a b", "a:b", "/abs", "x\n"])
def test_check_name_rejects_names_that_could_escape(name: str) -> None:
    with pytest.raises(InputError) as caught:
        manifest.check_name(name, "addon reference", "profile tectonic")
    assert f"profile tectonic: addon reference {name!r} is not allowed" in str(caught.value)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "https://tectonic-torcx.release.core-os.net/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json",
            "https://tectonic-torcx.release.core-os.net/manifests/amd64-usr/1632.3.0/torcx_manifest.json",
        ),
        ("http://bucket/{{.OSVersion}}.json", "http://bucket/1632.3.0.json"),
        ("http://bucket/{{.Board}}-{{.Board}}/{{.OSVersion}}", "http://bucket/amd64-usr-amd64-usr/1632.3.0"),
    ],
)
def test_manifest_url_fills_the_placeholders(template: str, expected: str) -> None:
    assert manifest.manifest_url(template, "amd64-usr", "1632.3.0") == expected


def test_sha512_of_a_stream_and_a_file(tmp_path: Path) -> None:
    data = b"x" * (manifest.CHUNK_BYTES + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert manifest.file_digest(path) == sha512(data)
    assert list(manifest.read_chunks(io.BytesIO(data))) == [data[: manifest.CHUNK_BYTES], data[manifest.CHUNK_BYTES :]]
    assert manifest.stream_digest([b"ab", b"c"]) == sha512(b"abc")



# --- ambiguity, compatibility, URL grammar ----------------------------------------------------------


def _versions(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "torcx-package-list-v0", "value": {"packages": [{"name": "docker", "versions": list(entries)}]}}


def test_a_version_listed_twice_is_refused_naming_both() -> None:
    document = _versions({"version": "1.12", "hash": HASH_A, "locations": []},
                         {"version": "17.03", "hash": HASH_A, "locations": []},
                         {"version": "1.12", "hash": HASH_B, "locations": []})
    with pytest.raises(InputError) as caught:
        _parse(document)
    assert str(caught.value) == ("https://bucket/m.json: value.packages[0]: version '1.12' is listed twice "
                                 "(versions[0] and versions[2]); expected each once")


def test_a_package_listed_twice_is_refused_naming_both() -> None:
    document = copy.deepcopy(DOCUMENT)
    document["value"]["packages"].append({"name": "docker", "versions": []})
    with pytest.raises(InputError) as caught:
        _parse(document)
    assert str(caught.value) == ("https://bucket/m.json: value: package 'docker' is listed twice "
                                 "(packages[0] and packages[2]); expected each once")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["value", "packages", 0, "defaultVersion"], 1.12, "value.packages[0].defaultVersion: expected str, got float"),
        ([*V0, "sourcePackage"], ["x"], "versions[0].sourcePackage: expected str, got list"),
        ([*V0, "locations"], [{"url": "https://host:port/x"}], "locations[0].url: 'https://host:port/x' is not"),
        ([*V0, "locations"], [{"path": "/usr/share/torcx/store/a b"}], "path '/usr/share/torcx/store/a b' is not"),
    ],
    ids=["default-version-float", "source-package-list", "url-bad-port", "path-with-space"],
)
def test_fields_have_their_types(path: list[Any], value: Any, expected: str) -> None:
    with pytest.raises(InputError, match=re.escape(expected)):
        _parse(_with(path, value))


def test_a_version_without_locations_is_not_offered() -> None:
    """As the original moves on to the next preferred version, rather than
    choosing one it cannot install."""
    document = _versions({"version": "17.03", "hash": HASH_A, "locations": []},
                         {"version": "1.12", "hash": HASH_B, "locations": [{"url": "https://b/d.tgz"}]})
    parsed = _parse(document)
    assert parsed.versions_of("docker") == ("1.12",)
    assert parsed.package("docker").find("17.03") is not None  # type: ignore[union-attr]
    plan = strategy.choose(kube_version="v1.8.4", preferred=("17.03", "1.12"), mapping_source="m",
                           current_os="1632.3.0", next_os=None, offered={"1632.3.0": parsed.versions_of("docker")})
    assert plan == strategy.Plan(version="1.12", os_versions=("1632.3.0",))


@pytest.mark.parametrize(
    ("board", "version", "expected"),
    [
        ("../../x", "1632.3.0", "manifest URL: board '../../x' is not allowed"),
        ("amd64-usr", "1632.3.0/../../x", "manifest URL: OS version '1632.3.0/../../x' is not allowed"),
        ("amd64-usr", "v1632.3.0", "OS version 'v1632.3.0' is not allowed"),
        ("amd64-usr", "1632.03.0", "OS version '1632.03.0' is not allowed"),
        ("amd64-usr", "1632.3.0 ", "OS version '1632.3.0 ' is not allowed"),
        ("amd64-usr?x=", "1632.3.0", "board 'amd64-usr?x=' is not allowed"),
    ],
)
def test_manifest_url_refuses_values_that_would_move_it(board: str, version: str, expected: str) -> None:
    with pytest.raises(InputError, match=re.escape(expected)):
        manifest.manifest_url("https://b/{{.Board}}/{{.OSVersion}}/m.json", board, version)
