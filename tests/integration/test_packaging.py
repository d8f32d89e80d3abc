"""Installing the bundle: `make install`, `make rpm` and the Ignition example."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from simnode.cluster import REPO
from torcx_tectonic import config, envfile, mappings

PYTHON = "/usr/bin/python3.11"


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "-C", str(REPO), *args], check=True, capture_output=True, text=True)


def sitelib(python: str) -> str:
    result = subprocess.run(["make", "-s", "-C", str(REPO), "--eval", "print-sitelib: ; @echo $(PYTHON_SITELIB)",
                             "print-sitelib", f"PYTHON={python}"], check=True, capture_output=True, text=True)
    return result.stdout.strip()


def test_make_install_puts_everything_where_systemd_and_the_interpreter_look(tmp_path: Path) -> None:
    make("install", f"DESTDIR={tmp_path}", f"PYTHON={PYTHON}")
    generator = tmp_path / "usr/lib/systemd/system-generators/torcx-tectonic-generator"
    scripts = sorted((tmp_path / "usr/libexec/torcx-tectonic").iterdir())
    assert [s.name for s in scripts] == sorted(p.name for p in (REPO / "libexec").iterdir())
    for executable in [generator, *scripts]:
        assert os.access(executable, os.X_OK), executable
        assert executable.read_text().splitlines()[0] == f"#!{PYTHON}", executable
    units = {p.name for p in (tmp_path / "usr/lib/systemd/system").iterdir()}
    assert units == {p.name for p in (REPO / "units").iterdir()}
    package = tmp_path / sitelib(PYTHON).lstrip("/") / "torcx_tectonic"
    assert {p.name for p in package.glob("*.py")} == {p.name for p in (REPO / "torcx_tectonic").glob("*.py")}
    shipped = tmp_path / "etc/torcx-tectonic/torcx-tectonic.conf"
    assert config.build(config.collect([(str(shipped), shipped.read_text())])) == config.build({})
    assert (tmp_path / "etc/torcx-tectonic/conf.d").is_dir()

    # the installed generator runs on that interpreter with the installed package alone
    out = tmp_path / "generated"
    out.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(package.parent)}
    subprocess.run([str(generator), str(out), str(out), str(out)], check=True, env=env, cwd="/")
    assert (out / "torcx-bootstrap-os-update.service").is_file()
    assert (out / "torcx-bootstrap.target.requires/torcx-bootstrap-finish.service").is_symlink()


@pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="rpmbuild is not installed (make test installs rpm)")
def test_make_rpm_builds_a_package_with_the_bundle() -> None:
    make("rpm")
    rpms = sorted((REPO / "build/rpm/RPMS/noarch").glob("torcx-tectonic-*.noarch.rpm"))
    assert rpms
    listing = subprocess.run(["rpm", "-qlp", str(rpms[-1])], check=True, capture_output=True, text=True).stdout
    for path in ("/usr/lib/systemd/system-generators/torcx-tectonic-generator",
                 "/usr/lib/systemd/system/torcx-bootstrap.target",
                 "/usr/libexec/torcx-tectonic/install-addons",
                 "/etc/torcx-tectonic/torcx-tectonic.conf"):
        assert path in listing.splitlines(), path
    assert "/torcx_tectonic/steps.py" in listing


def _data(source: str) -> str:
    assert source.startswith("data:,"), source
    return urllib.parse.unquote(source.removeprefix("data:,"))


def test_ignition_example_installs_a_valid_configuration() -> None:
    document = json.loads((REPO / "examples/ignition.json").read_text())
    assert document["ignition"]["version"] == "2.2.0"
    files = {f["path"]: f["contents"]["source"] for f in document["storage"]["files"]}
    conf = "/etc/torcx-tectonic/conf.d/10-cluster.conf"
    parsed = config.build(config.collect([(conf, _data(files[conf]))]))
    assert parsed.torcx.keyring == Path("/etc/torcx-tectonic/keyring.asc")
    assert str(parsed.torcx.keyring) in files  # the keyring the configuration names is installed
    env = "/etc/kubernetes/installer/kubelet.env"
    assert envfile.parse_env(_data(files[env]), env)["KUBELET_IMAGE_TAG"] == "v1.8.4_coreos.0"
    maps = "/etc/kubernetes/installer/runtime-mappings.yaml"
    assert mappings.parse_mappings(_data(files[maps]), maps).versions_for("v1.8.4+coreos.0") == ("17.03", "1.12")
    units = {u["name"]: u for u in document["systemd"]["units"]}
    assert units["torcx-bootstrap.target"]["enabled"] is True
    assert (REPO / "units/torcx-bootstrap.target").is_file()
    # the proxy drop-in is a prefix drop-in: it applies to every torcx-*.service unit
    proxy = units["torcx-.service"]["dropins"][0]["contents"]
    assert "Environment=HTTPS_PROXY=" in proxy and "Environment=NO_PROXY=" in proxy
