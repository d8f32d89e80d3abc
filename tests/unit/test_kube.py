"""kube: kubeconfig parsing (every credential form and every broken one) and the client's calls."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from torcx_tectonic import kube
from torcx_tectonic.errors import InputError, NetworkError
from torcx_tectonic.kube import Credentials, KubeClient

from .helpers import http_server, make_config

CA, CERT, KEY = b"-----CA-----\n", b"-----CERT-----\n", b"-----KEY-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(
    *,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    current: str | None = "ctx",
    extra_contexts: int = 0,
) -> str:
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": cluster
                if cluster is not None
                else {"server": "https://10.3.0.1:443/", "certificate-authority-data": b64(CA)},
            }
        ],
        "users": [
            {
                "name": "u",
                "user": user
                if user is not None
                else {"client-certificate-data": b64(CERT), "client-key-data": b64(KEY)},
            }
        ],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}]
        + [{"name": f"other-{i}", "context": {"cluster": "c", "user": "u"}} for i in range(extra_contexts)],
    }
    if current is not None:
        document["current-context"] = current
    return yaml.safe_dump(document)


def parse(text: str, base: Path = Path("/etc/kubernetes")) -> Credentials:
    return kube.parse_kubeconfig(text, "/etc/kubernetes/kubeconfig", base)


def test_embedded_data() -> None:
    assert parse(kubeconfig()) == Credentials(
        server="https://10.3.0.1:443", ca_pem=CA, cert_pem=CERT, key_pem=KEY, token=None, insecure=False
    )


def test_file_paths_are_relative_to_the_kubeconfig_directory(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.crt").write_bytes(CA)
    (tmp_path / "tls" / "client.crt").write_bytes(CERT)
    absolute = tmp_path / "elsewhere.key"
    absolute.write_bytes(KEY)
    config = tmp_path / "kubeconfig"
    config.write_text(
        kubeconfig(
            cluster={"server": "https://api:6443", "certificate-authority": "tls/ca.crt"},
            user={"client-certificate": "tls/client.crt", "client-key": str(absolute)},
        )
    )
    creds = kube.load_kubeconfig(config)
    assert (creds.server, creds.ca_pem, creds.cert_pem, creds.key_pem) == ("https://api:6443", CA, CERT, KEY)


def test_token() -> None:
    creds = parse(kubeconfig(user={"token": "s3cret"}))
    assert (creds.token, creds.cert_pem, creds.key_pem) == ("s3cret", None, None)


def test_token_file_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    assert parse(kubeconfig(user={"tokenFile": "token"}), base=tmp_path).token == "from-file"


def test_missing_current_context_with_one_context() -> None:
    assert parse(kubeconfig(current=None)).server == "https://10.3.0.1:443"


def test_insecure_is_reported() -> None:
    cluster = {"server": "https://api", "insecure-skip-tls-verify": True}
    assert parse(kubeconfig(cluster=cluster)).insecure is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clusters: [unclosed\n", "kubeconfig:2: not valid YAML (expected ',' or ']'"),
        ("- just\n- a list\n", "expected a kubeconfig mapping (apiVersion: v1, kind: Config)"),
        ("", "expected a kubeconfig mapping"),
        (kubeconfig(current=None, extra_contexts=1), "no current-context and not exactly one context"),
        (kubeconfig(current="missing"), "no context named 'missing'"),
        (kubeconfig().replace("clusters:", "clusterz:"), "expected a list of clusters"),
        (kubeconfig(user={}), "user has neither a client certificate nor a token"),
        (
            kubeconfig(user={"client-certificate-data": b64(CERT)}),
            "a client certificate needs both client-certificate and client-key",
        ),
        (kubeconfig(user={"client-key-data": b64(KEY)}), "needs both client-certificate and client-key"),
        (
            kubeconfig(cluster={"server": "http://10.3.0.1:8080"}),
            "cluster server 'http://10.3.0.1:8080' is not an https:// URL",
        ),
        (kubeconfig(cluster={"certificate-authority-data": b64(CA)}), "cluster server None is not an https:// URL"),
        (
            kubeconfig(cluster={"server": "https://a", "certificate-authority-data": "not base64!"}),
            "certificate-authority-data is not valid base64",
        ),
        (
            kubeconfig(user={"client-certificate-data": "@@@", "client-key-data": b64(KEY)}),
            "client-certificate-data is not valid base64",
        ),
        (kubeconfig(user={"tokenFile": "missing-token"}), "tokenFile /nonexistent/missing-token: cannot read"),
        (
            kubeconfig(user={"client-certificate": "missing.crt", "client-key-data": b64(KEY)}),
            "client-certificate /nonexistent/missing.crt: cannot read",
        ),
    ],
    ids=[
        "bad-yaml",
        "list",
        "empty",
        "two-contexts-no-current",
        "unknown-context",
        "no-clusters",
        "no-credentials",
        "cert-without-key",
        "key-without-cert",
        "http-server",
        "no-server",
        "bad-ca-base64",
        "bad-cert-base64",
        "missing-token-file",
        "missing-cert-file",
    ],
)
def test_broken_kubeconfigs_name_the_file_and_the_problem(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        parse(text, base=Path("/nonexistent"))
    message = str(caught.value)
    assert message.startswith("/etc/kubernetes/kubeconfig:")
    assert expected in message


def test_missing_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"kubeconfig {tmp_path / 'kubeconfig'}: cannot read: No such file"):
        kube.load_kubeconfig(tmp_path / "kubeconfig")


# --- the client --------------------------------------------------------------------------------


def _client(base: str, **creds: Any) -> KubeClient:
    defaults: dict[str, Any] = {
        "server": base,
        "ca_pem": None,
        "cert_pem": None,
        "key_pem": None,
        "token": "t",
        "insecure": False,
    }
    network = make_config({"network.retries": "0", "network.connect_timeout": "2", "network.read_timeout": "5"})
    return KubeClient(Credentials(**{**defaults, **creds}), network.network)


def test_client_key_material_is_private_and_removed() -> None:
    client = _client("https://api", ca_pem=CA, cert_pem=CERT, key_pem=KEY, token=None)
    with client:
        cert, key = client.session.cert  # type: ignore[misc]
        assert Path(cert).read_bytes() == CERT and Path(key).read_bytes() == KEY
        assert Path(str(client.session.verify)).read_bytes() == CA
        assert os.stat(key).st_mode & 0o777 == 0o600
        assert "Authorization" not in client.session.headers
    assert not Path(key).exists() and not Path(cert).parent.exists()


def test_client_token_and_insecure() -> None:
    with _client("https://api", token="abc", insecure=True, ca_pem=CA) as client:
        assert client.session.headers["Authorization"] == "Bearer abc"
        assert client.session.verify is False


def test_client_calls() -> None:
    with http_server() as server:
        server.routes = {
            "/version": (200, json.dumps({"gitVersion": "v1.8.4+coreos.0"}).encode()),
            "/api/v1/namespaces/tectonic-system/configmaps/tectonic-torcx-runtime-mappings": (
                200,
                json.dumps({"data": {"runtime-mappings.yaml": "kind: VersionManifestV1\n"}}).encode(),
            ),
            "/api/v1/nodes/node-1": (200, json.dumps({"metadata": {"labels": {"a": "b"}}}).encode()),
        }
        with _client(server.base) as client:
            assert client.version() == "v1.8.4+coreos.0"
            assert (
                client.configmap_value("tectonic-system", "tectonic-torcx-runtime-mappings", "runtime-mappings.yaml")
                == "kind: VersionManifestV1\n"
            )
            assert client.configmap_value("tectonic-system", "tectonic-torcx-runtime-mappings", "other") is None
            assert client.configmap_value("tectonic-system", "missing", "runtime-mappings.yaml") is None
            assert client.node("node-1") == {"metadata": {"labels": {"a": "b"}}}


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (
            (403, json.dumps({"kind": "Status", "message": "forbidden: User cannot get"}).encode()),
            "api-server version: GET {base}/version answered 403: forbidden: User cannot get",
        ),
        ((500, b"<html>  oops </html>"), "answered 500: <html> oops </html>"),
        ((200, b"not json"), "api-server version: GET {base}/version did not answer JSON"),
        ((200, b'{"major": "1"}'), "api-server version: {base}/version has no gitVersion"),
        (None, "api-server version: GET {base}/version answered 404"),
    ],
    ids=["forbidden", "server-error", "not-json", "no-git-version", "not-found"],
)
def test_client_errors_name_the_call_and_the_answer(route: tuple[int, bytes] | None, expected: str) -> None:
    with http_server() as server:
        if route is not None:
            server.routes["/version"] = route
        with _client(server.base) as client, pytest.raises(NetworkError) as caught:
            client.version()
        assert expected.format(base=server.base) in str(caught.value)


def test_client_unreachable_server() -> None:
    with http_server() as server:
        base = server.base
    with _client(base) as client, pytest.raises(NetworkError) as caught:
        client.version()
    assert f"api-server version: cannot reach {base}/version" in str(caught.value)
