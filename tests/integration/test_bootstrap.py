"""The bootstrap flow in a real systemd: `systemctl start torcx-bootstrap.target`.

Each test boots a fresh node (systemd 252 in systemd-nspawn) with the bundle
installed by `make install`, a stand-in update_engine on its system bus, an
HTTPS bucket with really signed manifests and real addons, and a TLS
api-server stand-in.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from simnode.bucket import Signer
from simnode.cluster import BOARD, CLUO_PREFIX, Release, cluster_node, enable
from simnode.node import Node

from .flows import (
    REBOOT_EXIT_CODE,
    bootstrap_journal,
    failure,
    has_record,
    last_run,
    record,
    run_result,
    start_bootstrap,
    start_bootstrap_expecting_reboot,
    status,
    unit_result,
)

CURRENT, NEXT = "1632.3.0", "1688.5.3"
BOTH = [Release(CURRENT, ["1.12", "17.03"]), Release(NEXT, ["1.12", "17.03"])]
UPDATE = {"mode": "update", "new_version": NEXT, "step_seconds": 0.05}
NO_REBOOT = {"bootstrap": {"reboot": "no"}}


def store_file(node: Node, os_version: str, version: str) -> Path:
    return node.host_path(f"/var/lib/torcx/store/{os_version}/docker:{version}.torcx.tgz")


def profile(node: Node, name: str = "tectonic") -> dict[str, object]:
    return dict(json.loads(node.host_path(f"/etc/torcx/profiles/{name}.json").read_text()))


def untouched_torcx(node: Node) -> None:
    """No addon, profile or next-profile was written: no file at all. (Empty
    directories are allowed: the service manager creates the addon step's
    writable /var/lib/torcx and /etc/torcx when its unit starts, and a refused
    download leaves its versioned store empty.)"""
    for top in ("/var/lib/torcx", "/etc/torcx"):
        tree = node.host_path(top).rglob("*") if node.host_path(top).exists() else iter(())
        written = [p for p in tree if not p.is_dir()]
        assert written == [], written


def test_fresh_node_with_an_update_gets_docker_for_both_os_versions_and_reboots(bundle: Path) -> None:
    with cluster_node(bundle, BOTH, os_version=CURRENT, update_engine=UPDATE) as (cluster, node):
        node.boot()
        assert start_bootstrap_expecting_reboot(node) == REBOOT_EXIT_CODE

        for os_version in (CURRENT, NEXT):
            addon = store_file(node, os_version, "17.03")
            assert addon.is_file(), f"no addon for OS {os_version}"
            assert hashlib.sha512(addon.read_bytes()).hexdigest() == cluster.bucket.expected_sha512(
                BOARD, os_version, "17.03")
        assert profile(node) == {"kind": "profile-manifest-v0",
                                 "value": {"images": [{"name": "docker", "reference": "17.03"}]}}
        assert node.host_path("/etc/torcx/next-profile").read_text().strip() == "tectonic"
        kubelet_env = node.host_path("/etc/kubernetes/kubelet.env").read_text()
        assert "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n" in kubelet_env
        assert kubelet_env.startswith("# written by the installer\nKUBELET_IMAGE_URL=quay.io/coreos/hyperkube\n")
        assert "KUBELET_API_SERVERS=https://10.3.0.1:443" in kubelet_env
        wants = node.host_path("/etc/systemd/system/multi-user.target.wants/kubelet.service")
        assert os.readlink(wants).endswith("/kubelet.service")
        # Docker changed from the vendor's: its data is emptied before the new one starts.
        assert json.loads(node.host_path("/var/lib/torcx-tectonic/docker-reset-needed").read_text()) == {
            "from": "com.coreos.cl", "to": "17.03"}
        journal = bootstrap_journal(node)
        reason = "OS 1688.5.3 is installed, docker changes from com.coreos.cl to 17.03"
        assert f"rebooting for: {reason}" in journal
        assert "docker 17.03 for Kubernetes v1.8.4+coreos.0, for OS 1688.5.3, 1632.3.0" in journal
        # the reboot the last step queued stopped it, and it ended as a success, not 'signal'
        assert "Failed with result" not in node.journal(extra=["-u", "torcx-*"])
        assert (last_run(node, "bootstrap")["result"], last_run(node, "bootstrap")["note"]) == (
            "rebooting", f"rebooting for: {reason}")
        # one download of the addon both OS versions use: the second store has a hard link
        assert len(cluster.addon_downloads()) == 1
        assert store_file(node, CURRENT, "17.03").stat().st_ino == store_file(node, NEXT, "17.03").stat().st_ino

        # The node comes back on the new OS: bootstrap does nothing, the kubelet runs.
        node.boot_again(os_version=NEXT, update_engine={"mode": "none"})
        node.wait_for(lambda: unit_result(node, "kubelet.service")[0] == "active", what="kubelet running")
        assert unit_result(node, "torcx-bootstrap-os-update.service") == ("inactive", "success")
        assert not node.exists("/run/torcx-tectonic/bootstrap")  # no bootstrap run in this boot
        # the operator's view of the healthy node: both verdicts ok
        code, document = status(node)
        assert (code, document["verdict"]["current"]["ok"], document["os"]["current"]) == (0, True, NEXT), document
        assert document["flows"]["bootstrap"]["last_run"]["result"] == "rebooting"
        assert unit_result(node, "torcx-new-kubelet.path")[0] == "active"


def test_enabled_target_bootstraps_at_first_boot_reboots_and_then_stays_idle(bundle: Path) -> None:
    # The way a node really comes up: Ignition enabled the target, the first boot
    # updates the OS and reboots (a daemon-reload in the middle of this boot
    # transaction once dropped the later steps' jobs: they must all run).
    docker = {  # a stand-in Docker that notes what it found in its data directory when it started
        "/usr/lib/systemd/system/docker.service":
            "[Service]\nExecStart=/bin/sh -c 'ls -A /var/lib/docker > /run/docker-saw; exec sleep infinity'\n"
            "[Install]\nWantedBy=multi-user.target\n",
        "/var/lib/docker/containers/written-by-the-old-docker": "old",
    }
    with cluster_node(bundle, BOTH, os_version=CURRENT, update_engine=UPDATE, files=docker) as (cluster, node):
        enable(node, "torcx-bootstrap.target")
        enable(node, "docker.service")
        node.boot(wait_ready=False)
        assert node.wait_exit(120) == REBOOT_EXIT_CODE
        assert "KUBELET_IMAGE_TAG=v1.8.4_coreos.0" in node.host_path("/etc/kubernetes/kubelet.env").read_text()
        assert store_file(node, NEXT, "17.03").is_file() and store_file(node, CURRENT, "17.03").is_file()
        assert "rebooting for: OS 1688.5.3 is installed, docker changes" in bootstrap_journal(node)
        downloads = cluster.addon_downloads()

        node.boot_again(os_version=NEXT, update_engine={"mode": "none"})
        node.wait_for(lambda: unit_result(node, "kubelet.service")[0] == "active", what="kubelet running")
        assert not node.exists("/run/torcx-tectonic/bootstrap")
        assert cluster.addon_downloads() == downloads
        assert node.update_engine_attempts() == 0
        # Docker changed: its data directory was emptied before the new Docker started.
        node.wait_for(lambda: node.exists("/run/docker-saw"), what="docker started")
        assert node.read("/run/docker-saw") == ""
        assert not node.exists("/var/lib/torcx-tectonic/docker-reset-needed")
        assert "emptied /var/lib/docker (1 entries)" in node.journal("torcx-docker-reset-data.service")
        assert last_run(node, "docker-reset")["result"] == "ok"
        # The idle bootstrap holds no lock: a kubelet change is followed in this boot.
        assert unit_result(node, "torcx-tectonic-lock@bootstrap.service")[0] == "inactive"
        node.write("/etc/kubernetes/kubelet.env",
                   "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.8.5_coreos.0\n")
        node.wait_for(lambda: run_result(node, "new-kubelet") == "ok", timeout=60, what="the new-kubelet flow")
        assert record(node, "new-kubelet", "addons")["version"] == "17.03"


def test_enabled_target_without_reboot_starts_the_kubelet_in_the_same_boot(bundle: Path) -> None:
    with cluster_node(bundle, BOTH, os_version=CURRENT, settings=NO_REBOOT) as (cluster, node):
        enable(node, "torcx-bootstrap.target")
        node.boot(timeout=120)
        assert unit_result(node, "torcx-bootstrap.target")[0] == "active"
        assert unit_result(node, "kubelet.service")[0] == "active"
        assert record(node, "bootstrap", "bootstrap-finish")["reboot"] is False
        assert last_run(node, "bootstrap")["result"] == "ok"
        assert ("a reboot is needed (docker changes from com.coreos.cl to 17.03) but [bootstrap] reboot=no"
                in bootstrap_journal(node))
        downloads = len(cluster.addon_downloads())

        node.shutdown()
        node.boot_again()
        assert unit_result(node, "torcx-bootstrap.target")[0] == "active"
        assert not node.exists("/run/torcx-tectonic/bootstrap")
        assert len(cluster.addon_downloads()) == downloads
        assert unit_result(node, "kubelet.service")[0] == "active"


def test_unreachable_api_server_uses_the_installer_files_and_is_asked_once_per_run(bundle: Path) -> None:
    # The default retry budget (5 retries with backoff): the api-server refuses, the
    # first step that asks gives up after two retries, and the run remembers it.
    settings = {"bootstrap": {"reboot": "no", "upgrade_os": "no"},
                "network": {"retries": "5", "backoff_factor": "1", "connect_timeout": "10", "read_timeout": "60"}}
    with cluster_node(bundle, BOTH, os_version=CURRENT, settings=settings, apiserver_up=False,
                      node_files={"installer_tag": "v1.8.2_coreos.0"}) as (cluster, node):
        node.boot()
        assert start_bootstrap(node).returncode == 0
        kube = record(node, "bootstrap", "kubernetes-version")
        assert (kube["version"], kube["source"]) == ("v1.8.2+coreos.0", "/etc/kubernetes/installer/kubelet.env")
        docker = record(node, "bootstrap", "runtime-choice")
        assert docker["mapping_source"] == "/etc/kubernetes/installer/runtime-mappings.yaml"
        assert (docker["version"], docker["os_versions"]) == ("17.03", [CURRENT])
        assert "KUBELET_IMAGE_TAG=v1.8.2_coreos.0" in node.read("/etc/kubernetes/kubelet.env")
        assert unit_result(node, "kubelet.service")[0] == "active"

        unreachable = record(node, "bootstrap", "api-server")
        assert (unreachable["server"], unreachable["step"]) == (cluster.api.url, "kubelet-version")
        assert unreachable["reason"].endswith("connection refused")
        asked = node.journal("torcx-bootstrap-kubelet-version.service")
        assert asked.count("Retrying (") == 2, asked  # urllib3's line for each retry
        mappings = node.journal("torcx-bootstrap-docker-version.service")
        assert "could not be reached earlier in this run" in mappings and "Retrying (" not in mappings, mappings


def test_failed_os_updates_are_retried_then_the_node_goes_on_and_says_so(bundle: Path) -> None:
    settings = {"bootstrap": {"reboot": "no", "os_update_attempts": "2"}}
    failing = {"mode": ["error", "error"], "step_seconds": 0.05}
    with cluster_node(bundle, BOTH, os_version=CURRENT, settings=settings, update_engine=failing) as (_, node):
        node.boot()
        assert start_bootstrap(node).returncode == 0
        assert node.update_engine_attempts() == 2
        os_versions = record(node, "bootstrap", "os-versions")
        assert (os_versions["update"], os_versions["next"]) == ("failed", None)
        assert "OS update failed 2 time(s)" in os_versions["warning"]
        assert "continuing on the running OS 1632.3.0" in bootstrap_journal(node)
        assert store_file(node, CURRENT, "17.03").is_file()
        assert unit_result(node, "kubelet.service")[0] == "active"


def test_failed_os_updates_fail_the_bootstrap_when_configured(bundle: Path) -> None:
    settings = {"bootstrap": {"os_update_failure": "fail", "os_update_attempts": "1", "os_update_timeout": "3"}}
    with cluster_node(bundle, BOTH, os_version=CURRENT, settings=settings,
                      update_engine={"mode": "hang"}) as (cluster, node):
        node.boot()
        assert start_bootstrap(node).returncode != 0
        error = failure(node, "bootstrap", "os-update")
        assert "OS update failed 1 time(s): update_engine did not finish within 3s" in error
        assert "os_update_failure=continue" in error
        assert cluster.bucket.requests_for("/") == []
        untouched_torcx(node)
        assert not node.exists("/etc/kubernetes/kubelet.env")


def test_no_update_available_installs_for_the_running_os_only(bundle: Path) -> None:
    with cluster_node(bundle, BOTH, os_version=CURRENT, update_engine={"mode": "none"}) as (_, node):
        node.boot()
        assert start_bootstrap_expecting_reboot(node) == REBOOT_EXIT_CODE
        assert store_file(node, CURRENT, "17.03").is_file()
        assert not node.host_path(f"/var/lib/torcx/store/{NEXT}").exists()
        assert "rebooting for: docker changes from com.coreos.cl to 17.03" in bootstrap_journal(node)


def test_upgrade_os_no_never_asks_for_an_update(bundle: Path) -> None:
    settings = {"bootstrap": {"reboot": "no", "upgrade_os": "no"}}
    with cluster_node(bundle, BOTH, os_version=CURRENT, settings=settings, update_engine=UPDATE) as (_, node):
        node.boot()
        assert start_bootstrap(node).returncode == 0
        assert node.update_engine_attempts() == 0
        assert node.update_engine_status()[2] == "UPDATE_STATUS_IDLE"
        assert record(node, "bootstrap", "os-versions")["next"] is None
        assert store_file(node, CURRENT, "17.03").is_file()
        assert not node.host_path(f"/var/lib/torcx/store/{NEXT}").exists()


def test_skip_torcx_sets_only_the_kubelet_version(bundle: Path) -> None:
    settings = {"bootstrap": {"skip_torcx": "yes"}}
    with cluster_node(bundle, BOTH, os_version=CURRENT, settings=settings) as (cluster, node):
        node.boot()
        assert start_bootstrap(node).returncode == 0
        untouched_torcx(node)
        assert cluster.bucket.requests_for("/") == []
        assert "KUBELET_IMAGE_TAG=v1.8.4_coreos.0" in node.read("/etc/kubernetes/kubelet.env")
        assert unit_result(node, "kubelet.service")[0] == "active"
        assert not has_record(node, "bootstrap", "runtime-choice")
        assert last_run(node, "bootstrap")["result"] == "ok"


def test_addon_in_the_vendor_store_is_not_downloaded(bundle: Path) -> None:
    releases = [Release(CURRENT, ["1.12", "17.03"], vendor={"17.03"}), Release(NEXT, ["17.03"], vendor={"17.03"})]
    with cluster_node(bundle, releases, os_version=CURRENT, update_engine=UPDATE, vendor=["17.03"]) as (cluster, node):
        node.boot()
        assert start_bootstrap_expecting_reboot(node) == REBOOT_EXIT_CODE
        assert cluster.addon_downloads() == []
        assert not node.host_path("/var/lib/torcx/store").exists()
        assert profile(node)["value"] == {"images": [{"name": "docker", "reference": "17.03"}]}


def test_os_older_than_the_addon_epoch_needs_no_addon_work(bundle: Path) -> None:
    with cluster_node(bundle, [Release(CURRENT, ["17.03"])], os_version="1409.7.0") as (cluster, node):
        node.boot()
        assert start_bootstrap(node).returncode == 0
        assert cluster.bucket.requests_for("/") == []
        untouched_torcx(node)
        assert record(node, "bootstrap", "runtime-choice")["version"] is None
        assert "KUBELET_IMAGE_TAG=v1.8.4_coreos.0" in node.read("/etc/kubernetes/kubelet.env")
        assert unit_result(node, "kubelet.service")[0] == "active"


def _assert_docker_step_failed(node: Node, *expected: str) -> None:
    result = start_bootstrap(node)
    assert result.returncode != 0
    error = failure(node, "bootstrap", "docker-version")
    for text in expected:
        assert text in error, error
    assert unit_result(node, "torcx-bootstrap-docker-version.service") == ("failed", "exit-code")
    # it tried again on its own before giving up ([units] retry_attempts = 2)
    assert "failed (attempt 1 of 2), trying again in 1s" in bootstrap_journal(node)
    for later, output in (("addons", "addons"), ("kubelet-env", "kubelet-env"), ("finish", "bootstrap-finish")):
        assert unit_result(node, f"torcx-bootstrap-{later}.service")[0] == "inactive"
        assert not has_record(node, "bootstrap", output)
    assert not node.exists("/etc/kubernetes/kubelet.env")
    untouched_torcx(node)


def test_unknown_kubernetes_minor_fails_the_docker_step_and_nothing_after_it(bundle: Path) -> None:
    with cluster_node(bundle, BOTH, os_version=CURRENT, kube_version="v1.99.0") as (_, node):
        node.boot()
        _assert_docker_step_failed(
            node, "no docker version for Kubernetes v1.99.0",
            "ConfigMap tectonic-system/tectonic-torcx-runtime-mappings", "mapped minors: 1.8, 1.9",
            "the manifest for OS 1632.3.0 offers 1.12, 17.03")


def test_no_mapped_docker_in_the_manifest_fails_the_docker_step(bundle: Path) -> None:
    releases = [Release(CURRENT, ["1.12"])]
    with cluster_node(bundle, releases, os_version=CURRENT, mappings={"1.8": ["17.03"]}) as (_, node):
        node.boot()
        _assert_docker_step_failed(
            node, "no docker version for Kubernetes v1.8.4+coreos.0",
            "the mappings from ConfigMap tectonic-system/tectonic-torcx-runtime-mappings accept 17.03",
            "the manifest for OS 1632.3.0 offers 1.12")


def test_manifest_signed_by_an_unknown_key_is_refused(bundle: Path) -> None:
    with cluster_node(bundle, BOTH, os_version=CURRENT) as (cluster, node), Signer() as stranger:
        cluster.bucket.resign_with(stranger)
        node.boot()
        _assert_docker_step_failed(
            node, f"manifest for {BOARD} {CURRENT} ({cluster.bucket.base_url}/manifests/{BOARD}/{CURRENT}/",
            "signature verification against /etc/torcx-tectonic/keyring.gpg failed",
            "signed by a key not in the keyring")


def test_unreachable_bucket_fails_the_docker_step_naming_the_url(bundle: Path) -> None:
    with cluster_node(bundle, BOTH, os_version=CURRENT) as (cluster, node):
        cluster.bucket.set_fault("/manifests/", status=503)
        node.boot()
        _assert_docker_step_failed(
            node, f"manifest for {BOARD} 1632.3.0: GET {cluster.bucket.base_url}/manifests/{BOARD}/{CURRENT}/"
                  "torcx_manifest.json answered 503")
        # each attempt retried the request itself (network retries = 1) before the step gave up
        assert len(cluster.bucket.requests_for("/manifests/")) == 2 * 2


def test_addon_with_a_wrong_hash_never_enters_a_store(bundle: Path) -> None:
    with cluster_node(bundle, BOTH, os_version=CURRENT) as (cluster, node):
        cluster.bucket.corrupt_addon(BOARD, CURRENT, "17.03")
        node.boot()
        assert start_bootstrap(node).returncode != 0
        error = failure(node, "bootstrap", "addons")
        assert "docker:17.03.torcx.tgz" in error and "sha512 mismatch" in error
        assert "nothing was stored" in error
        untouched_torcx(node)
        assert not node.exists("/etc/kubernetes/kubelet.env")


def test_running_the_target_again_downloads_and_rewrites_nothing(bundle: Path) -> None:
    with cluster_node(bundle, BOTH, os_version=CURRENT, settings=NO_REBOOT, update_engine=UPDATE) as (cluster, node):
        node.boot()
        assert start_bootstrap(node).returncode == 0
        watched = [store_file(node, CURRENT, "17.03"), store_file(node, NEXT, "17.03"),
                   node.host_path("/etc/torcx/profiles/tectonic.json"), node.host_path("/etc/torcx/next-profile")]
        before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in watched}
        kubelet_env = node.read("/etc/kubernetes/kubelet.env")
        downloads = cluster.addon_downloads()
        assert len(downloads) == 1  # the second OS version's store got a hard link

        # kubelet.env marks the node as bootstrapped: remove it to make the target run again.
        node.run("rm", "/etc/kubernetes/kubelet.env")
        assert start_bootstrap(node).returncode == 0
        assert cluster.addon_downloads() == downloads
        assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in watched} == before
        assert node.read("/etc/kubernetes/kubelet.env") == kubelet_env
        installed = record(node, "bootstrap", "addons")
        assert [p["action"] for p in installed["placements"]] == ["present", "present"]
        assert installed["changed_files"] == []


def test_generated_units_pass_systemd_analyze_verify(bundle: Path) -> None:
    configs = {"default": "", "upgrade-os-no": "[bootstrap]\nupgrade_os = no\n",
               "skip-torcx": "[bootstrap]\nskip_torcx = yes\n"}
    with cluster_node(bundle, BOTH, os_version=CURRENT) as (_, node):
        node.boot()
        for name, text in configs.items():
            node.write("/etc/torcx-tectonic/conf.d/60-case.conf", text)
            node.systemctl("daemon-reload")
            units = node.run("find", "/run/systemd/generator", "-maxdepth", "1", "-type", "f",
                             "-name", "torcx-*").stdout.split()
            assert "/run/systemd/generator/torcx-bootstrap-kubelet-env.service" in units
            has_docker_step = "/run/systemd/generator/torcx-bootstrap-docker-version.service" in units
            assert has_docker_step == (name != "skip-torcx")
            result = node.run("systemd-analyze", "verify", *units, "/usr/lib/systemd/system/torcx-bootstrap.target",
                              check=False)
            assert (result.returncode, result.stderr.strip()) == (0, ""), name
            os_update = node.read("/run/systemd/generator/torcx-bootstrap-os-update.service")
            assert ("Update the OS before configuring torcx" in os_update) == (name != "upgrade-os-no")
        # Enabled, the bootstrap joins the boot transaction: systemd finds it consistent.
        node.systemctl("enable", "torcx-bootstrap.target")
        result = node.run("systemd-analyze", "verify", "/usr/lib/systemd/system/multi-user.target", check=False)
        assert (result.returncode, result.stderr.strip()) == (0, "")


def test_bad_configuration_is_reported_by_the_first_step_and_changes_nothing(bundle: Path) -> None:
    # The generator still writes the units (from the defaults) so the steps exist and
    # the first one reports the precise error: file, line, value and what is allowed.
    settings = {"kubernetes": {"annotation": "nope"}}
    with cluster_node(bundle, BOTH, os_version=CURRENT, settings=settings) as (cluster, node):
        node.boot()
        assert start_bootstrap(node).returncode != 0
        error = failure(node, "bootstrap", "os-update")
        assert "/etc/torcx-tectonic/conf.d/50-test.conf:" in error
        assert "[kubernetes] annotation = 'nope': expected PREFIX/NAME" in error and CLUO_PREFIX in error
        untouched_torcx(node)
        assert cluster.bucket.requests_for("/") == []
        assert not node.exists("/etc/kubernetes/kubelet.env")
