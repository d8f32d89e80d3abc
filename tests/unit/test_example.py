"""The Ignition example: the keyring that verifies every manifest is in the
config itself, never fetched unpinned from the host that serves the manifests."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

from torcx_tectonic.cluster import mappings
from torcx_tectonic.edges import signature

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ignition.json"
BASE64_DATA = "data:text/plain;charset=utf-8;base64,"


def _files() -> dict[str, dict[str, object]]:
    document = json.loads(EXAMPLE.read_text())
    return {f["path"]: f["contents"] for f in document["storage"]["files"]}


def test_the_keyring_is_embedded_and_is_an_armored_keyring() -> None:
    contents = _files()["/etc/torcx-tectonic/keyring.asc"]
    source = str(contents["source"])
    assert source.startswith(BASE64_DATA), "the trust anchor must not be downloaded at first boot"
    armored = base64.b64decode(source.removeprefix(BASE64_DATA), validate=True).decode("ascii")
    assert signature.dearmor(armored, "examples/ignition.json keyring")


def test_every_remote_file_is_pinned_by_a_hash() -> None:
    for path, contents in _files().items():
        if not str(contents["source"]).startswith("data:"):
            verification = contents.get("verification")
            assert isinstance(verification, dict) and str(verification.get("hash", "")).startswith("sha512-"), path


def test_the_runtime_mappings_are_written_as_the_installer_writes_them() -> None:
    source = str(_files()["/etc/kubernetes/installer/runtime-mappings.yaml"]["source"])
    text = urllib.parse.unquote(source.removeprefix("data:,"))
    assert '"' not in text and "'" not in text  # unquoted, as the Tectonic installer writes it
    parsed = mappings.parse_mappings(text, "example")
    assert parsed.versions_for("v1.8.4+coreos.0") == ("17.03", "1.12")
