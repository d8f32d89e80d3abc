"""The Flatcar-like node's pieces that need no container."""

from __future__ import annotations

from pathlib import Path

import pytest

from simnode import flatcar
from simnode.node import os_release
from torcx_tectonic.edges import envfile
from torcx_tectonic.node import osrelease


def test_a_flatcar_os_release_is_matched_by_sysext_and_read_by_the_product() -> None:
    text = os_release("3760.2.0", "amd64-usr", "flatcar")
    values = envfile.parse_env(text, "os-release")
    assert (values["ID"], values["SYSEXT_LEVEL"], values["VERSION_ID"]) == ("flatcar", "1.0", "3760.2.0")
    assert "COREOS_BOARD" not in values and values["FLATCAR_BOARD"] == "amd64-usr"
    # the product takes the board from the machine when COREOS_BOARD is missing
    assert osrelease.os_release_from_text(text, "os-release", machine="x86_64") == osrelease.OSRelease(
        "3760.2.0", "amd64-usr")
    assert "ID=coreos" in os_release("1632.3.0", "amd64-usr")
    with pytest.raises(ValueError, match="unknown OS flavor 'fedora'"):
        os_release("1.0.0", None, "fedora")


def test_python_is_found_where_the_host_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    for name in ("python3", "python3.11", "pydoc3", "perl"):
        (tmp_path / "bin" / name).touch()
    found = flatcar.python_paths([f"{tmp_path}/bin/python3*", f"{tmp_path}/bin/pydoc3*"])
    assert [p.rsplit("/", 1)[1] for p in found] == ["pydoc3", "python3", "python3.11"]


def test_the_node_gets_nodes_for_loop_devices() -> None:
    lines = flatcar.loop_device_nodes(3).splitlines()
    assert lines == ["b /dev/loop0 0660 root disk - 7:0", "b /dev/loop1 0660 root disk - 7:1",
                     "b /dev/loop2 0660 root disk - 7:2"]
