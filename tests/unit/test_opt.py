"""`make opt`'s Ignition spec 2.x config, and the spec 2.x rules the test files stage applies."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from simnode.ignition import IgnitionError, decode_data_url, files_stage
from sysext import opt
from sysext.build import REPO

EXAMPLE = json.loads((REPO / "examples/flatcar-sysext.ign").read_text())


@pytest.fixture
def document(tmp_path: Path) -> dict[str, Any]:
    """The config for a small tree: a program file, a generator, a unit."""
    program = tmp_path / "opt/torcx-tectonic/bin/python 3"
    program.parent.mkdir(parents=True)
    program.write_bytes(b"\x7fELF program")
    program.chmod(0o755)
    generator = tmp_path / "etc/systemd/system-generators/torcx-tectonic-generator"
    generator.parent.mkdir(parents=True)
    generator.write_text("#!/opt/torcx-tectonic/bin/python3 -IS\nprint('100% generated')\n")
    generator.chmod(0o755)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/systemd/system/torcx-bootstrap.target").write_text("[Unit]\n")
    return opt.render_ignition(tmp_path, "/opt/torcx-tectonic", "/opt/torcx-tectonic-1.0-abc", "https://srv/tt/",
                               EXAMPLE)


def test_files_under_the_prefix_are_fetched_and_pinned_the_rest_embedded(document: dict[str, Any]) -> None:
    files = {f["path"]: f for f in document["storage"]["files"]}
    program = files["/opt/torcx-tectonic-1.0-abc/bin/python 3"]
    assert program == {"filesystem": "root", "path": "/opt/torcx-tectonic-1.0-abc/bin/python 3", "mode": 0o755,
                       "contents": {"source": "https://srv/tt/bin/python%203", "verification": {
                           "hash": "sha512-" + hashlib.sha512(b"\x7fELF program").hexdigest()}}}
    generator = files["/etc/systemd/system-generators/torcx-tectonic-generator"]
    assert generator["mode"] == 0o755 and "verification" not in generator["contents"]
    assert decode_data_url(generator["contents"]["source"]).decode().endswith("print('100% generated')\n")
    # the operator's parts are the Flatcar example's, in spec 2 form
    assert decode_data_url(files["/etc/torcx-tectonic/keyring.asc"]["contents"]["source"]).startswith(
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert files["/etc/torcx-tectonic/conf.d/10-cluster.conf"]["filesystem"] == "root"
    assert document["systemd"] == {"units": [{"name": "torcx-bootstrap.target", "enabled": True}]}
    written = files_stage(document, remote={"https://srv/tt/bin/python%203": b"\x7fELF program"})
    assert written.enabled == ["torcx-bootstrap.target"]
    # the prefix links to this build's directory: a newer build is put in place by moving the link
    assert written.links == {"/opt/torcx-tectonic": "torcx-tectonic-1.0-abc"}


@pytest.mark.parametrize("change, message", [
    (lambda f: f.pop("filesystem"), 'name their file system \\("filesystem": "root"\\)'),
    (lambda f: f.update(filesystem="oem"), "name their file system"),
    (lambda f: f.update(mode="0755"), "mode '0755' is not a number"),
    (lambda f: f.update(overwrite=True), r"spec 2 files have no \['overwrite'\]"),
    (lambda f: f["contents"].update(verification={"hash": "sha256-00"}), "spec 2 verifies sha512 only"),
    (lambda f: f.update(path="opt/x"), "is not absolute"),
])
def test_what_spec_2_does_not_allow_is_refused(document: dict[str, Any], change: Any, message: str) -> None:
    broken = copy.deepcopy(document)
    change(next(f for f in broken["storage"]["files"] if f["path"].startswith("/opt/")))
    with pytest.raises(IgnitionError, match=message):
        files_stage(broken, remote={"https://srv/tt/bin/python%203": b"\x7fELF program"})


def test_spec_3_has_no_file_system_and_unknown_versions_are_refused(document: dict[str, Any]) -> None:
    spec3 = copy.deepcopy(EXAMPLE)
    spec3["storage"]["files"][0]["filesystem"] = "root"
    with pytest.raises(IgnitionError, match="spec 3 has no"):
        files_stage(spec3, remote={})
    with pytest.raises(IgnitionError, match="ignition.version '2.4.0'"):
        files_stage({**document, "ignition": {"version": "2.4.0"}})
    with pytest.raises(IgnitionError, match=r"ignition sections \['config'\]"):
        files_stage({**document, "ignition": {"version": "2.2.0", "config": {}}})
