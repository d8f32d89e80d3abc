"""Self-test of the integration harness's stand-in servers.

The product's integration tests trust the bucket, api-server and proxy
stand-ins to speak the real protocols; if one of them were subtly wrong
(a signature gpgv does not accept, a TLS setup that skips client-cert
checks, a proxy nobody actually went through) every product test built on it
would prove nothing.  These tests talk to each stand-in with independent real
clients (requests/urllib3, gpgv, tarfile) to pin that down.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import ssl
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from simnode.addons import make_addon, read_image_manifest
from simnode.apiserver import CLUO_PREFIX, ApiServer, KubeconfigKind
from simnode.bucket import Bucket, Signer, gpgv_verify
from simnode.pki import Pki, make_pki
from simnode.proxy import Proxy

BOARD = "amd64-usr"
OS = "1632.3.0"
HOOK = f"{CLUO_PREFIX}tectonic-torcx-pre-hook-ok"
MAPPINGS = 'kind: VersionManifestV1\nversions:\n  k8s:\n    "1.8":\n      docker: ["17.03", "1.12"]\n'


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), node_name="node-1")


@pytest.fixture(scope="module")
def signer() -> Iterator[Signer]:
    with Signer() as s:
        yield s


@pytest.fixture(scope="module")
def other_signer() -> Iterator[Signer]:
    with Signer(uid="Mallory <mallory@test.invalid>") as s:
        yield s


@pytest.fixture
def bucket(tmp_path: Path, signer: Signer) -> Iterator[Bucket]:
    with Bucket(tmp_path / "bucket", signer) as b:
        yield b


@pytest.fixture
def api(pki: Pki) -> Iterator[ApiServer]:
    with ApiServer(pki, token="s3cret", runtime_mappings=None) as a:
        a.create_node("node-1")
        yield a


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a proxy configured on the test host out of direct-connection tests."""
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)


def _get(url: str, pki: Pki, **kw: Any) -> requests.Response:
    return requests.get(url, verify=str(pki.ca_cert), timeout=10, **kw)


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``check``: servers record some events in their own threads, after the client saw them."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- addons ------------------------------------------------------------------
def test_addon_is_a_deterministic_torcx_archive(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    h1 = make_addon(tmp_path / "a", "docker", "17.03")  # a directory: canonical name inside
    h2 = make_addon(tmp_path / "b.torcx.tgz", "docker", "17.03")
    path = tmp_path / "a" / "docker:17.03.torcx.tgz"
    assert path.is_file()
    assert h1 == h2 == hashlib.sha512(path.read_bytes()).hexdigest()
    manifest = read_image_manifest(path)
    assert manifest["kind"] == "image-manifest-v0"
    assert manifest["value"] == {"bin": ["/bin/docker"],
                                 "units": ["/lib/systemd/system/docker.service"],
                                 "network": [], "sysusers": []}
    with tarfile.open(path, "r:gz") as tar:
        script = tar.extractfile("bin/docker")
        assert script is not None and b"17.03" in script.read()
        assert tar.getmember("bin/docker").mode == 0o755


# -- bucket --------------------------------------------------------------------
def test_bucket_serves_signed_manifest_and_addons_over_https(
    bucket: Bucket, pki: Pki, signer: Signer, tmp_path: Path, no_proxy_env: None
) -> None:
    bucket.add_release(BOARD, OS, ["1.12", "17.03"], default="1.12", vendor={"1.12"})
    bucket.serve(tls=pki)
    assert bucket.base_url.startswith("https://127.0.0.1:")
    assert bucket.manifest_url_template.endswith("/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json")
    url = bucket.manifest_url_template.replace("{{.Board}}", BOARD).replace("{{.OSVersion}}", OS)

    r = _get(url, pki)
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(r.content))
    doc = r.json()
    assert doc["kind"] == "torcx-package-list-v0"
    (pkg,) = doc["value"]["packages"]
    assert pkg["name"] == "docker" and pkg["defaultVersion"] == "1.12"
    by_version = {v["version"]: v for v in pkg["versions"]}
    assert by_version["1.12"]["locations"][0] == {"path": "/usr/share/torcx/store/docker:1.12.torcx.tgz"}
    assert list(by_version["17.03"]["locations"][0]) == ["url"]
    assert by_version["17.03"]["sourcePackage"] == "app-torcx/docker-17.03"

    # Real OpenPGP: gpgv verifies with the binary keyring, not the armored one.
    data, sig = tmp_path / "m.json", tmp_path / "m.json.asc"
    data.write_bytes(r.content)
    sig_resp = _get(url + ".asc", pki)
    assert sig_resp.content.startswith(b"-----BEGIN PGP SIGNATURE-----")
    sig.write_bytes(sig_resp.content)
    binary = signer.write_keyring(tmp_path / "bucket.gpg")
    armored = signer.write_keyring(tmp_path / "bucket.asc", armored=True)
    assert gpgv_verify(binary, sig, data).returncode == 0
    assert gpgv_verify(armored, sig, data).returncode != 0
    dearmored = tmp_path / "dearmored.gpg"
    dearmored.write_bytes(Signer.dearmor(armored.read_bytes()))
    assert gpgv_verify(dearmored, sig, data).returncode == 0

    # The addon downloads and matches its announced hash.
    addon_url = by_version["17.03"]["locations"][-1]["url"]
    a = _get(addon_url, pki)
    assert a.status_code == 200
    assert by_version["17.03"]["hash"] == "sha512-" + hashlib.sha512(a.content).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(a.content), mode="r:gz") as tar:
        assert ".torcx/manifest.json" in tar.getnames()
    head = requests.head(addon_url, verify=str(pki.ca_cert), timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(a.content)
    assert head.content == b""

    assert [rec.status for rec in bucket.requests_for("/addons/")] == [200, 200]
    assert all(rec.tls and not rec.via_proxy for rec in bucket.log.all())
    assert _get(bucket.base_url + "/addons/nope.torcx.tgz", pki).status_code == 404
    assert _get(bucket.base_url + "/../../etc/passwd", pki).status_code == 404


def test_bucket_breakage_helpers(
    bucket: Bucket, pki: Pki, signer: Signer, other_signer: Signer, tmp_path: Path,
    no_proxy_env: None,
) -> None:
    bucket.serve(tls=pki)
    bucket.add_release(BOARD, OS, ["17.03"], default=None)  # rendered at once
    url = bucket.manifest_url(BOARD, OS)
    doc = _get(url, pki).json()
    assert "defaultVersion" not in doc["value"]["packages"][0]
    keyring = signer.write_keyring(tmp_path / "k.gpg")
    data, sig = bucket.manifest_path(BOARD, OS), bucket.signature_path(BOARD, OS)
    assert gpgv_verify(keyring, sig, data).returncode == 0

    bucket.resign_with(other_signer)
    assert gpgv_verify(keyring, sig, data).returncode != 0
    bucket.resign_with(signer, BOARD, OS)
    bucket.tamper_manifest(BOARD, OS)
    assert gpgv_verify(keyring, sig, data).returncode != 0
    bucket.drop_signature(BOARD, OS)
    assert _get(url + ".asc", pki).status_code == 404

    bucket.write_raw_manifest(BOARD, OS, '{"kind": "torcx-package-list-v0", "value": ')
    assert _get(url, pki).text.endswith('"value": ')
    assert gpgv_verify(keyring, sig, data).returncode == 0

    bucket.corrupt_addon(BOARD, OS, "17.03")
    body = _get(bucket.addon_url(BOARD, OS, "17.03"), pki).content
    assert hashlib.sha512(body).hexdigest() != bucket.expected_sha512(BOARD, OS, "17.03")

    bucket.set_fault("/addons/", status=503)
    assert _get(bucket.addon_url(BOARD, OS, "17.03"), pki).status_code == 503
    bucket.clear_faults()

    # A client that does not trust the test CA fails, and the bucket saw it.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=10)
    assert _eventually(lambda: bool(bucket.tls_failures))  # logged by the server thread

    bucket.close()
    with pytest.raises(requests.exceptions.ConnectionError):
        _get(url, pki)


# -- api-server --------------------------------------------------------------
def test_apiserver_authentication(api: ApiServer, pki: Pki, tmp_path: Path, no_proxy_env: None) -> None:
    cert = pki.client.requests_cert()
    r = _get(api.url + "/version", pki, cert=cert)
    assert r.status_code == 200
    assert r.json()["gitVersion"] == "v1.8.4+coreos.0" and r.json()["minor"] == "8"
    assert api.requests_for("/version")[-1].identity == "system:node:node-1"

    r = _get(api.url + "/version", pki, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200

    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = _get(api.url + "/version", pki, headers=headers)
        assert r.status_code == 401
        assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": "Unauthorized",
                            "reason": "Unauthorized", "code": 401}

    # A client certificate from another CA fails the handshake itself.  With
    # TLS 1.3 the client learns it only when it reads (an alert, or a reset if
    # its request write races the close), hence ConnectionError, SSLError's base.
    foreign = make_pki(tmp_path / "foreign")
    with pytest.raises(requests.exceptions.ConnectionError):
        _get(api.url + "/version", pki, cert=foreign.client.requests_cert())
    assert _eventually(lambda: any("certificate" in f.error.lower() for f in api.tls_failures))

    api.set_version("v1.9.1+coreos.0")
    assert _get(api.url + "/version", pki, cert=cert).json()["minor"] == "9"

    cm_url = api.url + "/api/v1/namespaces/tectonic-system/configmaps/tectonic-torcx-runtime-mappings"
    r = _get(cm_url, pki, cert=cert)
    assert r.status_code == 404 and r.json()["reason"] == "NotFound"
    api.set_runtime_mappings(MAPPINGS)
    r = _get(cm_url, pki, cert=cert)
    assert r.status_code == 200 and r.json()["kind"] == "ConfigMap"
    mappings = yaml.safe_load(r.json()["data"]["runtime-mappings.yaml"])
    assert mappings["versions"]["k8s"]["1.8"]["docker"] == ["17.03", "1.12"]


def test_apiserver_node_patches_and_operator(api: ApiServer, pki: Pki, no_proxy_env: None) -> None:
    cert = pki.client.requests_cert()
    node_url = api.url + "/api/v1/nodes/node-1"
    assert _get(node_url, pki, cert=cert).json()["metadata"]["name"] == "node-1"

    def patch(body: Any, ctype: str, url: str = node_url) -> requests.Response:
        return requests.patch(url, data=json.dumps(body), headers={"Content-Type": ctype},
                              cert=cert, verify=str(pki.ca_cert), timeout=10)

    # A hook that annotates before the operator picked the node gets wiped.
    r = patch({"metadata": {"annotations": {HOOK: "true"}}}, "application/merge-patch+json")
    assert r.status_code == 200 and r.json()["metadata"]["annotations"][HOOK] == "true"
    action = api.schedule_before_reboot(CLUO_PREFIX, [HOOK], after_seconds=0.2)
    assert action.wait(5)
    assert HOOK not in api.annotations()
    assert api.labels()[f"{CLUO_PREFIX}before-reboot"] == "true"
    assert not api.hooks_ok(CLUO_PREFIX, [HOOK])

    r = patch({"metadata": {"annotations": {HOOK: "true"}}}, "application/strategic-merge-patch+json")
    assert r.status_code == 200
    assert api.hooks_ok(CLUO_PREFIX, [HOOK])
    history = api.node_history()
    assert action.at is not None
    written = [s for s in history if s.annotations.get(HOOK) == "true" and s.time >= action.at]
    assert written and written[0].source.startswith("request:PATCH by system:node:node-1")

    r = patch([{"op": "remove", "path": f"/metadata/annotations/{HOOK.replace('/', '~1')}"}],
              "application/json-patch+json")
    assert r.status_code == 200 and HOOK not in api.annotations()
    r = patch({"metadata": {"annotations": {HOOK: None}}}, "application/merge-patch+json")
    assert r.status_code == 200
    assert patch({"metadata": {"annotations": {HOOK: True}}}, "application/merge-patch+json").status_code == 400
    assert patch({}, "application/json").status_code == 415
    assert patch({"metadata": {"resourceVersion": "1"}}, "application/merge-patch+json").status_code == 409

    api.create_node("node-2")
    r = patch({"metadata": {"labels": {"x": "y"}}}, "application/merge-patch+json",
              url=api.url + "/api/v1/nodes/node-2")
    assert r.status_code == 403 and r.json()["reason"] == "Forbidden"
    assert _get(api.url + "/api/v1/nodes/nope", pki, cert=cert).status_code == 404


def test_kubeconfig_kinds_work_with_a_real_client(
    api: ApiServer, pki: Pki, tmp_path: Path, no_proxy_env: None
) -> None:
    kinds: tuple[KubeconfigKind, ...] = ("certs", "token", "files")
    for kind in kinds:
        path = api.kubeconfig(tmp_path / kind / "kubeconfig", kind)
        cfg = yaml.safe_load(path.read_text())
        assert cfg["current-context"] == "kubelet-context"
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        assert cluster["server"] == api.url
        ca = tmp_path / kind / "ca-from-kubeconfig.pem"
        if "certificate-authority-data" in cluster:
            ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        else:
            ca = Path(cluster["certificate-authority"])
        kw: dict[str, Any] = {}
        if "token" in user:
            kw["headers"] = {"Authorization": f"Bearer {user['token']}"}
        elif "client-certificate-data" in user:
            crt, key = tmp_path / kind / "c.pem", tmp_path / kind / "k.pem"
            crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            kw["cert"] = (str(crt), str(key))
        else:
            kw["cert"] = (user["client-certificate"], user["client-key"])
        r = requests.get(cluster["server"] + "/version", verify=str(ca), timeout=10, **kw)
        assert r.status_code == 200, (kind, r.text)

    mapped = api.kubeconfig(tmp_path / "n" / "kubeconfig", "files",
                            files_dir=tmp_path / "root/etc/kubernetes/ssl",
                            files_dir_in_node="/etc/kubernetes/ssl")
    cfg = yaml.safe_load(mapped.read_text())
    assert cfg["users"][0]["user"]["client-key"] == "/etc/kubernetes/ssl/kubelet.key"
    assert (tmp_path / "root/etc/kubernetes/ssl/kubelet.key").stat().st_mode & 0o777 == 0o600


def test_unstarted_apiserver_refuses_connections(pki: Pki, no_proxy_env: None) -> None:
    api = ApiServer(pki)
    try:
        with pytest.raises(requests.exceptions.ConnectionError):
            _get(api.url + "/version", pki, cert=pki.client.requests_cert())
    finally:
        api.close()


# -- proxy ---------------------------------------------------------------------
def test_proxy_carries_bucket_but_not_apiserver(
    bucket: Bucket, api: ApiServer, pki: Pki, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket.add_release(BOARD, OS, ["17.03"], default="17.03")
    bucket.serve(tls=pki, url_host="localhost")
    with Proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        for var in ("https_proxy", "http_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        assert _get(bucket.manifest_url(BOARD, OS), pki).status_code == 200
        assert _get(api.url + "/version", pki, cert=pki.client.requests_cert()).status_code == 200

        assert proxy.tunnelled(f"localhost:{bucket.port}")
        assert not proxy.used_for_port(api.port)
        assert all(r.via_proxy for r in bucket.log.all())
        assert not any(r.via_proxy for r in api.log.all())

        # Plain http is forwarded (absolute URI), with a Via header.
        with Bucket(bucket.root, bucket.signer) as plain:
            plain.serve(tls=None, url_host="localhost")
            r = requests.get(plain.base_url + f"/manifests/{BOARD}/{OS}/torcx_manifest.json", timeout=10)
            assert r.status_code == 200 and r.headers["Via"] == "1.1 torcx-test-proxy"
            (rec,) = plain.log.all()
            assert rec.via_proxy and rec.headers["Via"] == "1.1 torcx-test-proxy"
            assert any(p.method == "GET" and p.target == f"localhost:{plain.port}" for p in proxy.records)

    # Sanity: the plain-TLS stdlib client also sees the server certificate as valid for localhost.
    ctx = pki.client_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
