"""The Flatcar Ignition example (and its Butane source): what it installs is valid."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from simnode.ignition import IgnitionError, decode_data_url, files_stage
from sysext import build
from torcx_tectonic import config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples/flatcar-sysext.ign"
BUTANE = REPO / "examples/flatcar-sysext.bu"
CONFIG = "/etc/torcx-tectonic/conf.d/10-cluster.conf"


@pytest.fixture
def document() -> dict[str, Any]:
    return dict(json.loads(EXAMPLE.read_text()))


def image_entry(document: dict[str, Any]) -> dict[str, Any]:
    images = [f for f in document["storage"]["files"] if f["path"].endswith(".raw")]
    assert len(images) == 1
    return dict(images[0])


def test_the_image_is_pinned_by_its_sha512_and_linked_where_systemd_sysext_looks(document: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.\d+\.\d+", document["ignition"]["version"])
    image = image_entry(document)
    assert re.fullmatch(r"sha512-[0-9a-f]{128}", image["contents"]["verification"]["hash"])
    assert image["contents"]["source"].startswith("https://")
    assert image["path"].startswith("/opt/extensions/torcx-tectonic/torcx-tectonic-")
    assert image["contents"]["source"].rsplit("/", 1)[1] == image["path"].rsplit("/", 1)[1]
    links = {link["path"]: link["target"] for link in document["storage"]["links"]}
    assert links == {"/etc/extensions/torcx-tectonic.raw": image["path"]}
    # nothing is enabled (the image activates itself once merged); the only units
    # it touches get a drop-in that orders Docker after Flatcar's late merge
    units = {unit["name"]: unit for unit in document["systemd"]["units"]}
    assert set(units) == {"docker.service", "containerd.service"}
    for unit in units.values():
        assert set(unit) == {"name", "dropins"}
        assert [d["contents"] for d in unit["dropins"]] == ["[Unit]\nAfter=ensure-sysext.service\n"]


def test_the_configuration_it_writes_is_valid_and_names_the_keyring_it_writes(document: dict[str, Any]) -> None:
    files = {f["path"]: f for f in document["storage"]["files"]}
    text = decode_data_url(files[CONFIG]["contents"]["source"]).decode()
    parsed = config.build(config.collect([(CONFIG, text)]))
    assert str(parsed.torcx.keyring) in files  # embedded, not fetched
    assert files[str(parsed.torcx.keyring)]["contents"]["source"].startswith("data:")
    assert b"BEGIN PGP PUBLIC KEY BLOCK" in decode_data_url(files[str(parsed.torcx.keyring)]["contents"]["source"])
    assert parsed.kubernetes.annotation.startswith("flatcar-linux-update.v1.flatcar-linux.net/")
    assert "{{.Board}}" in parsed.torcx.manifest_url and "{{.OSVersion}}" in parsed.torcx.manifest_url


def test_the_butane_source_says_what_the_ignition_config_says(document: dict[str, Any]) -> None:
    butane = yaml.safe_load(BUTANE.read_text())
    assert (butane["variant"], butane["version"]) == ("flatcar", "1.0.0")  # transpiles to Ignition 3.3.0
    assert document["ignition"]["version"] == "3.3.0"
    files = {f["path"]: f for f in document["storage"]["files"]}
    assert [f["path"] for f in butane["storage"]["files"]] == list(files)
    for entry in butane["storage"]["files"]:
        written = files[entry["path"]]
        assert written["mode"] == entry["mode"]
        contents = entry["contents"]
        if "inline" in contents:
            assert decode_data_url(written["contents"]["source"]).decode() == contents["inline"]
        else:
            assert written["contents"]["source"] == contents["source"]
            assert written["contents"]["verification"] == contents["verification"]
    assert [{k: link[k] for k in ("path", "target", "hard")} for link in butane["storage"]["links"]] == [
        {k: link[k] for k in ("path", "target", "hard")} for link in document["storage"]["links"]]
    assert butane["systemd"] == document["systemd"]


def test_make_sysext_fills_in_the_image_it_built(document: dict[str, Any]) -> None:
    digest = hashlib.sha512(b"image").hexdigest()
    rendered = build.render_ignition(document, "torcx-tectonic-0.2.0-arm64.raw", digest)
    image = image_entry(rendered)
    assert image["path"] == "/opt/extensions/torcx-tectonic/torcx-tectonic-0.2.0-arm64.raw"
    assert image["contents"]["source"] == "https://torcx.example.com/sysext/torcx-tectonic-0.2.0-arm64.raw"
    assert image["contents"]["verification"]["hash"] == f"sha512-{digest}"
    assert rendered["storage"]["links"][0]["target"] == image["path"]
    assert image_entry(document)["path"] != image["path"]  # the example itself is left alone
    # what Ignition then writes: the image checked against that hash
    written = files_stage(rendered, remote={image["contents"]["source"]: b"image"})
    assert written.files[image["path"]] == b"image"
    assert written.files["/etc/systemd/system/docker.service.d/10-torcx-tectonic.conf"].startswith(b"[Unit]")
    with pytest.raises(IgnitionError, match="sha512 is"):
        files_stage(rendered, remote={image["contents"]["source"]: b"tampered"})


def test_data_urls_decode_as_ignition_decodes_them() -> None:
    assert decode_data_url("data:,a%20b%0A") == b"a b\n"
    assert decode_data_url("data:;base64,aGk=") == b"hi"
    assert decode_data_url("data:text/plain;charset=utf-8;base64,aGk=") == b"hi"
    with pytest.raises(IgnitionError):
        decode_data_url("https://example.com/x")
