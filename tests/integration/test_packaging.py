"""Installing the bundle: `make install`, `make rpm` and the Ignition example."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from simnode.cluster import REPO, Release, build_bundle, cluster_node, enable
from simnode.node import REBOOT_EXIT_CODE, missing_requirements
from torcx_tectonic import config
from torcx_tectonic.cluster import mappings
from torcx_tectonic.edges import envfile

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
    command = tmp_path / "usr/bin/torcx-tectonic"
    for executable in [command, *scripts]:
        assert os.access(executable, os.X_OK), executable
        first, second = executable.read_text().splitlines()[:2]
        assert first == f"#!{PYTHON} -I", executable
        assert f'sys.path.insert(0, "{sitelib(PYTHON)}")' in second, executable
    # the generator (every boot) skips site: its path is what make found, the package and iniparse
    assert os.access(generator, os.X_OK)
    first, second = generator.read_text().splitlines()[:2]
    assert first == f"#!{PYTHON} -IS"  # one argument: a shebang passes the rest as one
    assert second.startswith(f'import sys; sys.path += ["{sitelib(PYTHON)}"'), second
    units = {p.name for p in (tmp_path / "usr/lib/systemd/system").iterdir()}
    assert units == {p.name for p in (REPO / "units").iterdir()}
    package = tmp_path / sitelib(PYTHON).lstrip("/") / "torcx_tectonic"
    assert {p.name for p in package.glob("*.py")} == {p.name for p in (REPO / "torcx_tectonic").glob("*.py")}
    # byte-compiled at install: /usr is read-only on a node, where nothing could write the cache
    tag = subprocess.run([PYTHON, "-c", "import sys; print(sys.implementation.cache_tag)"], check=True,
                         capture_output=True, text=True).stdout.strip()
    assert {p.name for p in (package / "__pycache__").glob(f"*.{tag}.pyc")} == {
        f"{p.stem}.{tag}.pyc" for p in package.glob("*.py")}
    shipped = tmp_path / "etc/torcx-tectonic/torcx-tectonic.conf"
    assert config.build(config.collect([(str(shipped), shipped.read_text())])) == config.build({})
    assert (tmp_path / "etc/torcx-tectonic/conf.d").is_dir()

    # the installed generator runs on that interpreter with the installed package alone
    out = tmp_path / "generated"
    out.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(package.parent)}
    subprocess.run([PYTHON, str(generator), str(out), str(out), str(out)], check=True, env=env, cwd="/")
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
    assert "/torcx_tectonic/flows.py" in listing and "/usr/bin/torcx-tectonic" in listing.splitlines()


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
    # the proxy is configured, not a prefix drop-in (those need systemd 239; Container Linux had 233)
    assert parsed.network.proxy == "http://proxy.example.com:3128"
    assert parsed.network.no_proxy == "10.3.0.1,.cluster.local"
    assert not any(u.get("dropins") for u in units.values())


def test_a_bundle_installed_in_other_directories_boots_and_bootstraps(tmp_path: Path) -> None:
    """make's directory variables reach the package and the units: nothing points at the defaults."""
    dirs = {"LIBEXECDIR": "/usr/local/libexec/tt", "SYSTEMD_UNITDIR": "/usr/local/lib/systemd/system",
            "GENERATORDIR": "/usr/local/lib/systemd/system-generators", "BINDIR": "/usr/local/bin",
            "PYTHON_SITELIB": "/usr/local/lib/tt/python"}
    reason = missing_requirements(extra_tools=("gpg", "gpgv"))
    if reason:
        pytest.skip(reason)
    bundle = build_bundle(tmp_path / "bundle", **dirs)
    assert not (bundle / "usr/libexec").exists() and not (bundle / "usr/lib/systemd").exists()
    releases = [Release("1632.3.0", ["17.03"]), Release("1688.5.3", ["17.03"])]
    update = {"mode": "update", "new_version": "1688.5.3", "step_seconds": 0.05}
    with cluster_node(bundle, releases, os_version="1632.3.0", update_engine=update) as (_, node):
        enable(node, "torcx-bootstrap.target", unit_dir=dirs["SYSTEMD_UNITDIR"])
        node.boot(wait_ready=False)  # the first boot bootstraps and ends in a reboot
        assert node.wait_exit(180) == REBOOT_EXIT_CODE
        for os_version in ("1632.3.0", "1688.5.3"):
            assert node.host_path(f"/var/lib/torcx/store/{os_version}/docker:17.03.torcx.tgz").is_file()
        assert "KUBELET_IMAGE_TAG=v1.8.4_coreos.0" in node.host_path("/etc/kubernetes/kubelet.env").read_text()
        node.boot_again(os_version="1688.5.3", update_engine={"mode": "none"})
        for unit, script in (("torcx-docker-reset-data.service", "docker-reset"),
                             ("torcx-tectonic-lock@new-os.service", "flow-lock")):
            command = node.systemctl("show", "-p", "ExecStart", unit).stdout
            assert f"path={dirs['LIBEXECDIR']}/{script} " in command, command
        result = node.run(f"{dirs['BINDIR']}/torcx-tectonic", "status", check=False)
        assert (result.returncode, result.stderr) == (0, ""), result.stdout
