"""Air-gapped nodes in a real systemd: `torcx-tectonic mirror` builds a mirror
from the stand-in bucket on the host, the bucket is then stopped, and a node
that has only the mirror (a directory under /srv, or a read-only disk mounted
under /media) bootstraps from it; a tampered mirror is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from simnode.cluster import BOARD, DEFAULT_MAPPINGS, Cluster, Release, mappings_yaml
from simnode.node import Node
from torcx_tectonic.commands import cli as command

from .flows import bootstrap_journal, failure, record, start_bootstrap, unit_result

CURRENT, NEXT = "1632.3.0", "1688.5.3"
BOTH = [Release(CURRENT, ["1.12", "17.03"]), Release(NEXT, ["1.12", "17.03"])]
UPDATE = {"mode": "update", "new_version": NEXT, "step_seconds": 0.05}
SRV = "/srv/mirror"


def node_settings(base: str) -> dict[str, dict[str, str]]:
    """What `torcx-tectonic mirror` printed for ``base``, and no reboot (the test looks at one boot)."""
    return {"torcx": {"manifest_url": f"file://{base}/manifests/{{{{.Board}}}}/{{{{.OSVersion}}}}/torcx_manifest.json",
                      "addon_mirror": f"file://{base}/addons"},
            "bootstrap": {"reboot": "no"}}


def build_mirror(cluster: Cluster, work: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    """Run the mirror command on the host against the stand-in bucket (HTTPS,
    really signed manifests): the mirror directory and what it printed."""
    (work / "keyring.gpg").write_bytes(cluster.signer.export_public())
    (work / "ca.pem").write_bytes(cluster.pki.ca_cert_pem)
    (work / "mappings.yaml").write_text(mappings_yaml(DEFAULT_MAPPINGS))
    (work / "mirror.conf").write_text(
        f"[torcx]\nmanifest_url = {cluster.bucket.manifest_url_template}\nkeyring = {work / 'keyring.gpg'}\n"
        f"[network]\nca_bundle = {work / 'ca.pem'}\nretries = 1\nbackoff_factor = 0.1\n")
    capsys.readouterr()
    code = command.main(["mirror", "--config", str(work / "mirror.conf"), "--to", str(work / "mirror"),
                         "--os-version", CURRENT, "--os-version", NEXT, "--kubernetes", "1.8",
                         "--mappings", str(work / "mappings.yaml"), "--served-at", f"file://{SRV}"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), out + err
    return work / "mirror", out


def mirror_files(mirror: Path, at: str) -> dict[str, bytes | str]:
    """The mirror directory as files of a node, under ``at``."""
    return {f"{at}/{p.relative_to(mirror)}": p.read_bytes() for p in sorted(mirror.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def mirrored(capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[Cluster, Path, str]]:
    """A cluster whose bucket served one mirror build and is then stopped:
    no node can reach it."""
    with tempfile.TemporaryDirectory(prefix="tt-mirror-") as tmp, Cluster(Path(tmp), BOTH) as cluster:
        mirror, printed = build_mirror(cluster, Path(tmp), capsys)
        cluster.bucket.close()
        yield cluster, mirror, printed


def bootstrapped_from(node: Node, base: str, cluster: Cluster) -> None:
    """The node bootstrapped with addons from the mirror at ``base``: the
    versioned stores, the profile, kubelet.env and the kubelet."""
    assert start_bootstrap(node).returncode == 0, bootstrap_journal(node)
    for os_version in (CURRENT, NEXT):
        addon = node.host_path(f"/var/lib/torcx/store/{os_version}/docker:17.03.torcx.tgz")
        assert hashlib.sha512(addon.read_bytes()).hexdigest() == cluster.bucket.expected_sha512(
            BOARD, os_version, "17.03")
    placements = record(node, "bootstrap", "addons")["placements"]
    assert [(p["os"], p["action"], p["url"]) for p in placements] == [
        (NEXT, "downloaded", f"file://{base}/addons/{BOARD}/{NEXT}/docker:17.03.torcx.tgz"),
        (CURRENT, "linked", None)]
    profile = json.loads(node.read("/etc/torcx/profiles/tectonic.json"))
    assert profile["value"]["images"] == [{"name": "docker", "reference": "17.03"}]
    assert node.read("/etc/torcx/next-profile").strip() == "tectonic"
    assert "KUBELET_IMAGE_TAG=v1.8.4_coreos.0" in node.read("/etc/kubernetes/kubelet.env")
    assert unit_result(node, "kubelet.service")[0] == "active"


def test_the_mirror_command_builds_a_mirror_a_node_without_the_bucket_bootstraps_from(
        bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with mirrored(capsys) as (cluster, mirror, printed):
        assert printed.endswith(
            f"Nodes that see this directory at file://{SRV} use it with:\n\n[torcx]\n"
            f"manifest_url = file://{SRV}/manifests/{{{{.Board}}}}/{{{{.OSVersion}}}}/torcx_manifest.json\n"
            f"addon_mirror = file://{SRV}/addons\n")
        # 17.03 for both OS versions (and for a node on 1632.3.0 alone)
        assert sorted(str(p.relative_to(mirror)) for p in mirror.rglob("*") if p.is_file()) == [
            f"addons/{BOARD}/{CURRENT}/docker:17.03.torcx.tgz", f"addons/{BOARD}/{NEXT}/docker:17.03.torcx.tgz",
            f"manifests/{BOARD}/{CURRENT}/torcx_manifest.json", f"manifests/{BOARD}/{CURRENT}/torcx_manifest.json.asc",
            f"manifests/{BOARD}/{NEXT}/torcx_manifest.json", f"manifests/{BOARD}/{NEXT}/torcx_manifest.json.asc"]
        # the stand-in's releases carry the same bytes: downloaded once, hard-linked in the mirror
        assert len(cluster.addon_downloads()) == 1
        linked = [mirror / f"addons/{BOARD}/{v}/docker:17.03.torcx.tgz" for v in (CURRENT, NEXT)]
        assert linked[0].stat().st_ino == linked[1].stat().st_ino
        for os_version in (CURRENT, NEXT):  # signed content, byte for byte
            manifest = f"manifests/{BOARD}/{os_version}/torcx_manifest.json"
            assert (mirror / manifest).read_bytes() == cluster.bucket.manifest_path(BOARD, os_version).read_bytes()
        assert not cluster.bucket.serving

        files = {**cluster.node_files(node_settings(SRV)), **mirror_files(mirror, SRV)}
        with Node(bundle=bundle, os_version=CURRENT, files=files, update_engine=UPDATE) as node:
            node.boot()
            bootstrapped_from(node, SRV, cluster)


def test_a_second_mirror_run_downloads_nothing(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="tt-mirror-") as tmp, Cluster(Path(tmp), BOTH) as cluster:
        mirror, _ = build_mirror(cluster, Path(tmp), capsys)
        before = {p: p.stat().st_mtime_ns for p in mirror.rglob("*")}
        downloads = cluster.addon_downloads()
        _, printed = build_mirror(cluster, Path(tmp), capsys)
        assert cluster.addon_downloads() == downloads
        assert {p: p.stat().st_mtime_ns for p in mirror.rglob("*")} == before
        assert "addons:     2 verified (0 downloaded, 0 bytes; 0 linked; 2 already there)" in printed


def test_a_mirror_on_a_read_only_disk_mounted_under_media(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The units run with ProtectSystem=strict (and ProtectHome=yes): a disk mounted under /media is
    # readable to them, read-only as a carried disk often is.
    with mirrored(capsys) as (cluster, mirror, _), Node(
            bundle=bundle, os_version=CURRENT, files=cluster.node_files(node_settings("/media/usb")),
            update_engine=UPDATE, nspawn_args=[f"--bind-ro={mirror}:/media/usb"]) as node:
        node.boot()
        assert node.run("findmnt", "-no", "OPTIONS", "/media/usb").stdout.startswith("ro")
        bootstrapped_from(node, "/media/usb", cluster)


def test_a_tampered_mirror_is_refused_with_the_usual_errors(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with mirrored(capsys) as (cluster, mirror, _):
        files: Mapping[str, bytes | str] = {**cluster.node_files(node_settings(SRV)), **mirror_files(mirror, SRV)}
        with Node(bundle=bundle, os_version=CURRENT, files=files, update_engine=UPDATE) as node:
            node.boot()
            # an addon changed in the mirror: it never enters a store
            addon = node.host_path(f"{SRV}/addons/{BOARD}/{NEXT}/docker:17.03.torcx.tgz")
            good = addon.read_bytes()
            addon.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
            assert start_bootstrap(node).returncode != 0
            error = failure(node, "bootstrap", "addons")
            assert f"file://{SRV}/addons/{BOARD}/{NEXT}/docker:17.03.torcx.tgz: sha512 mismatch for " \
                   "docker:17.03.torcx.tgz" in error and "nothing was stored" in error
            assert not any(p.is_file() for p in node.host_path("/var/lib/torcx").rglob("*"))
            assert not node.exists("/etc/torcx/next-profile")

            # the addon put right, but a manifest without its signature: refused before anything is used
            addon.write_bytes(good)
            node.host_path(f"{SRV}/manifests/{BOARD}/{NEXT}/torcx_manifest.json.asc").unlink()
            assert start_bootstrap(node).returncode != 0
            url = f"file://{SRV}/manifests/{BOARD}/{NEXT}/torcx_manifest.json"
            assert failure(node, "bootstrap", "docker-version") == (
                f"manifest for {BOARD} {NEXT} ({url}) is not signed: {url}.asc does not exist; expected a detached "
                "OpenPGP signature")
            assert not any(p.is_file() for p in node.host_path("/var/lib/torcx").rglob("*"))
            assert not node.exists("/etc/kubernetes/kubelet.env")


def test_a_mirror_under_home_is_hidden_from_the_units_and_the_error_says_so(
        bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = "/home/ops/mirror"
    with mirrored(capsys) as (cluster, mirror, _):
        files = {**cluster.node_files(node_settings(home)), **mirror_files(mirror, home)}
        with Node(bundle=bundle, os_version=CURRENT, files=files, update_engine=UPDATE) as node:
            node.boot()
            assert node.exists(f"{home}/manifests/{BOARD}/{NEXT}/torcx_manifest.json")  # there, for root's shell
            assert start_bootstrap(node).returncode != 0
            path = f"{home}/manifests/{BOARD}/{NEXT}/torcx_manifest.json"
            # ProtectHome=yes: /home is there, but inaccessible to the unit
            assert failure(node, "bootstrap", "docker-version") == (
                f"manifest for {BOARD} {NEXT}: cannot open {path} (file://{path}): Permission denied (the units run "
                "with ProtectHome=yes and PrivateTmp=yes and cannot see /home: keep a mirror under /srv, /var/lib, "
                "/opt, /media or /mnt)")
