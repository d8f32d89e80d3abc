"""mappings: VersionManifestV1 documents (quoted and as installers write them) and lookups by major.minor."""

from __future__ import annotations

from pathlib import Path

import pytest

from simnode.documents import large_mappings
from torcx_tectonic.cluster import mappings
from torcx_tectonic.edges.inputfile import MAX_FILE_BYTES
from torcx_tectonic.errors import InputError

DOCUMENT = """\
kind: VersionManifestV1
versions:
  k8s:
    "1.8":
      docker: ["17.03", "1.12"]
    "1.10":
      docker: ["17.03"]
      podman: ["1.0"]
    "1.7":
      other: ["x"]
"""


def test_parse_and_look_up_by_minor() -> None:
    parsed = mappings.parse_mappings(DOCUMENT, "ConfigMap tectonic-system/tectonic-torcx-runtime-mappings")
    assert parsed.by_minor == {"1.8": ("17.03", "1.12"), "1.10": ("17.03",)}
    assert parsed.versions_for("v1.8.4+coreos.0") == ("17.03", "1.12")
    assert parsed.versions_for("1.10.0") == ("17.03",)


#: What the Tectonic installer writes to /etc/kubernetes/installer/runtime-mappings.yaml
#: (and the original project's example ConfigMap holds): nothing quoted.
INSTALLER_DOCUMENT = """\
kind: VersionManifestV1
versions:
  k8s:
    1.7:
      docker: [1.12]
    1.8:
      docker: [17.03, 1.12]
    1.10:
      docker: [17.03, 1.12, 1.13]
    1.11:
      docker: [17.03]
"""


def test_unquoted_keys_and_versions_are_read_as_their_text() -> None:
    parsed = mappings.parse_mappings(INSTALLER_DOCUMENT, "/etc/kubernetes/installer/runtime-mappings.yaml")
    assert parsed.by_minor == {
        "1.7": ("1.12",),
        "1.8": ("17.03", "1.12"),
        "1.10": ("17.03", "1.12", "1.13"),
        "1.11": ("17.03",),
    }
    assert parsed.versions_for("v1.10.3+coreos.0") == ("17.03", "1.12", "1.13")
    assert "1.1" not in parsed.by_minor


def test_quoted_and_unquoted_spellings_of_one_minor_are_one_key() -> None:
    text = 'kind: VersionManifestV1\nversions:\n  k8s:\n    1.8: {docker: [17.03]}\n    "1.8": {docker: [1.12]}\n'
    with pytest.raises(InputError, match=r"m.yaml:5: not valid YAML \(key '1.8' appears twice \(lines 4 and 5\)\)"):
        mappings.parse_mappings(text, "m.yaml")


def test_load_mappings_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "runtime-mappings.yaml"
    assert mappings.load_mappings(path) is None
    path.write_text(INSTALLER_DOCUMENT)
    loaded = mappings.load_mappings(path)
    assert loaded is not None and loaded.source == str(path) and loaded.by_minor["1.8"] == ("17.03", "1.12")


def test_runtime_mappings_of_the_largest_size_are_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "runtime-mappings.yaml"
    path.write_text(large_mappings(MAX_FILE_BYTES))
    assert MAX_FILE_BYTES - 64 < path.stat().st_size <= MAX_FILE_BYTES
    loaded = mappings.load_mappings(path)
    assert loaded is not None
    count = len(loaded.by_minor)
    assert count > 20_000
    assert loaded.by_minor == {f"1.{100000 + n}": ("17.03", "1.12") for n in range(count)}
    assert loaded.versions_for(f"v1.{100000 + count - 1}.0") == ("17.03", "1.12")


def test_other_runtime() -> None:
    assert mappings.parse_mappings(DOCUMENT, "m", runtime="podman").by_minor == {"1.10": ("1.0",)}


@pytest.mark.parametrize(
    ("version", "minor"),
    [
        ("v1.8.4+coreos.0", "1.8"),
        ("1.8.4", "1.8"),
        ("v1.10.1", "1.10"),
        ("v1.9", "1.9"),
        ("v1.8.4_coreos.0", "1.8"),
        ("v1.11.0-beta.1", "1.11"),
        ("v2.0.0", "2.0"),
    ],
)
def test_kube_minor(version: str, minor: str) -> None:
    assert mappings.kube_minor(version) == minor


@pytest.mark.parametrize(
    "version",
    ["", "latest", "v1", "v1.x.0", "v01.8.0", "1.8.4/../x", "v1.8.4 extra", "v1.8.4\n", " v1.8.4", "v1.\u0668.4"],
)
def test_kube_minor_rejects_non_versions(version: str) -> None:
    """The string checked is the one used: no stripping first."""
    with pytest.raises(InputError) as caught:
        mappings.kube_minor(version)
    assert f"version {version!r} is not allowed; expected a Kubernetes version like v1.8.4+coreos.0" in str(
        caught.value)


def test_unknown_minor_names_version_source_and_known_minors() -> None:
    parsed = mappings.parse_mappings(DOCUMENT, "/etc/kubernetes/installer/runtime-mappings.yaml")
    with pytest.raises(InputError) as caught:
        parsed.versions_for("v1.9.1+coreos.0")
    message = str(caught.value)
    assert "Kubernetes v1.9.1+coreos.0 (minor 1.9) has no docker versions" in message
    assert "from /etc/kubernetes/installer/runtime-mappings.yaml" in message
    assert "mapped minors: 1.10, 1.8" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: [unclosed\n", "m.yaml:2: not valid YAML (expected ',' or ']'"),
        ("- a\n- b\n", "m.yaml: expected a mapping with kind: VersionManifestV1"),
        ("", "m.yaml: expected a mapping with kind: VersionManifestV1"),
        (
            "kind: VersionManifestV2\nversions: {k8s: {}}\n",
            "m.yaml: kind is 'VersionManifestV2'; expected 'VersionManifestV1'",
        ),
        ("versions: {k8s: {}}\n", "m.yaml: kind is None"),
        ("kind: VersionManifestV1\n", 'expected versions.k8s to map "major.minor" to runtime lists'),
        ("kind: VersionManifestV1\nversions: [1]\n", "expected versions.k8s to map"),
        ("kind: VersionManifestV1\nversions: {k8s: [1.8]}\n", "expected versions.k8s to map"),
        (
            "kind: VersionManifestV1\nversions: {k8s: {'1.8': [docker]}}\n",
            "versions.k8s.1.8 is a list; expected a mapping of runtime names to lists",
        ),
        ("kind: VersionManifestV1\nversions: {k8s: {'1.9': }}\n", "versions.k8s.1.9 is None; expected a mapping"),
        (
            "kind: VersionManifestV1\nversions: {k8s: {'1': {docker: ['17.03']}}}\n",
            'versions.k8s key \'1\' is not allowed; expected a "major.minor" version like 1.8',
        ),
        ("kind: VersionManifestV1\nversions: {k8s: {'../1.8': {docker: ['17.03']}}}\n", "key '../1.8' is not"),
        ("kind: VersionManifestV1\nversions: {k8s: {\"1.8\\n\": {docker: ['17.03']}}}\n", "key '1.8\\n' is not"),
        (
            "kind: VersionManifestV1\nversions: {k8s: {'1.8': {docker: '17.03'}}}\n",
            "versions.k8s.1.8.docker is '17.03'; expected a list of versions",
        ),
        (
            "kind: VersionManifestV1\nversions: {k8s: {'1.8': {docker: [[17.03]]}}}\n",
            "versions.k8s.1.8.docker entry a list is not allowed; expected letters, digits",
        ),
        ("kind: VersionManifestV1\nversions: {k8s: {'1.8': {docker: ['']}}}\n", "docker entry '' is not allowed"),
        ("kind: VersionManifestV1\nversions: {k8s: {'1.8': {docker: [../x]}}}\n", "entry '../x' is not allowed"),
    ],
    ids=[
        "bad-yaml",
        "list",
        "empty",
        "wrong-kind",
        "no-kind",
        "no-versions",
        "versions-list",
        "k8s-list",
        "entry-not-mapping",
        "entry-null",
        "not-major-minor",
        "traversal-key",
        "newline-key",
        "versions-string",
        "nested-list",
        "empty-version",
        "traversal-version",
    ],
)
def test_malformed_mappings_name_source_and_expectation(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        mappings.parse_mappings(text, "m.yaml")
    message = str(caught.value)
    assert message.startswith("m.yaml")
    assert expected in message
