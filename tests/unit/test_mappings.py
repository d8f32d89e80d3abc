"""mappings: VersionManifestV1 documents and lookups by Kubernetes major.minor."""

from __future__ import annotations

import pytest

from torcx_tectonic import mappings
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
        (" v1.11.0-beta.1 ", "1.11"),
        ("v2.0.0", "2.0"),
    ],
)
def test_kube_minor(version: str, minor: str) -> None:
    assert mappings.kube_minor(version) == minor


@pytest.mark.parametrize("version", ["", "latest", "v1", "v1.x.0", "v01.8.0", "1.8.4/../x", "v1.8.4 extra"])
def test_kube_minor_rejects_non_versions(version: str) -> None:
    with pytest.raises(InputError, match="is not a Kubernetes version like v1.8.4\\+coreos.0"):
        mappings.kube_minor(version)


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
        ("kind: [unclosed\n", "m.yaml: not valid YAML: "),
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
            "kind: VersionManifestV1\nversions: {k8s: {1.10: {docker: ['17.03']}}}\n",
            'versions.k8s key 1.1 is an unquoted number; quote it ("1.1") so that 1.10 is not read as 1.1',
        ),
        (
            "kind: VersionManifestV1\nversions: {k8s: {'1': {docker: ['17.03']}}}\n",
            'versions.k8s key \'1\' is not a "major.minor" version like "1.8"',
        ),
        ("kind: VersionManifestV1\nversions: {k8s: {'../1.8': {docker: ['17.03']}}}\n", "key '../1.8' is not"),
        ("kind: VersionManifestV1\nversions: {k8s: {\"1.8\\n\": {docker: ['17.03']}}}\n", "key '1.8\\n' is not"),
        (
            "kind: VersionManifestV1\nversions: {k8s: {'1.8': {docker: '17.03'}}}\n",
            "versions.k8s.1.8.docker must be a list of version strings, got '17.03'",
        ),
        (
            "kind: VersionManifestV1\nversions: {k8s: {'1.8': {docker: [17.03]}}}\n",
            "versions.k8s.1.8.docker must be a list of version strings, got [17.03]",
        ),
        ("kind: VersionManifestV1\nversions: {k8s: {'1.8': {docker: ['']}}}\n", "must be a list of version strings"),
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
        "unquoted-float-key",
        "not-major-minor",
        "traversal-key",
        "newline-key",
        "versions-string",
        "unquoted-version",
        "empty-version",
    ],
)
def test_malformed_mappings_name_source_and_expectation(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        mappings.parse_mappings(text, "m.yaml")
    message = str(caught.value)
    assert message.startswith("m.yaml")
    assert expected in message
