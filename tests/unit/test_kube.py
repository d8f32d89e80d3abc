"""kube: kubeconfig parsing (every credential form and every broken one) and the client's calls."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from torcx_tectonic.cluster import kube
from torcx_tectonic.cluster.kube import Credentials, KubeClient
from torcx_tectonic.config import NetworkSettings
from torcx_tectonic.errors import InputError, NetworkError, UnreachableError

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
        (kubeconfig().replace("clusters:", "clusterz:"), "no cluster named 'c' in clusters"),
        (kubeconfig(user={}), "user has neither a client certificate nor a token"),
        (
            kubeconfig(user={"client-certificate-data": b64(CERT)}),
            "a client certificate needs both client-certificate and client-key",
        ),
        (kubeconfig(user={"client-key-data": b64(KEY)}), "needs both client-certificate and client-key"),
        (
            kubeconfig(cluster={"server": "http://10.3.0.1:8080"}),
            "clusters[0].cluster.server 'http://10.3.0.1:8080' is not an https:// URL with a host",
        ),
        (kubeconfig(cluster={"certificate-authority-data": b64(CA)}), "clusters[0].cluster.server None is not"),
        (
            kubeconfig(cluster={"server": "https://a", "certificate-authority-data": "not base64!"}),
            "certificate-authority-data is not valid base64",
        ),
        (
            kubeconfig(user={"client-certificate-data": "@@@", "client-key-data": b64(KEY)}),
            "client-certificate-data is not valid base64",
        ),
        (
            kubeconfig(user={"client-certificate-data": "é" * 4, "client-key-data": b64(KEY)}),
            "users[0].user.client-certificate-data is not valid base64",
        ),
        (
            kubeconfig(user={"tokenFile": "missing-token"}),
            "/nonexistent/missing-token: missing; expected the tokenFile named in /etc/kubernetes/kubeconfig",
        ),
        (
            kubeconfig(user={"client-certificate": "missing.crt", "client-key-data": b64(KEY)}),
            "/nonexistent/missing.crt: missing; expected the client-certificate named in /etc/kubernetes/kubeconfig",
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
        "non-ascii-base64",
        "missing-token-file",
        "missing-cert-file",
    ],
)
def test_broken_kubeconfigs_name_the_file_and_the_problem(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        parse(text, base=Path("/nonexistent"))
    message = str(caught.value)
    assert "/etc/kubernetes/kubeconfig" in message
    assert expected in message


def test_missing_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"{tmp_path / 'kubeconfig'}: missing; expected a kubeconfig"):
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
        ((200, b"not json"), "api-server version: GET {base}/version:1: not valid JSON (Expecting value)"),
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


# --- kubeconfig fields typed as kubectl types them -----------------------------------------------


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        ({"insecure-skip-tls-verify": "false"}, "clusters[0].cluster.insecure-skip-tls-verify is the string 'false'; "
                                                "expected true or false (a YAML boolean)"),
        ({"insecure-skip-tls-verify": "true"}, "is the string 'true'; expected true or false (a YAML boolean)"),
        ({"insecure-skip-tls-verify": 0}, "is the number 0; expected true or false (a YAML boolean)"),
        ({"server": ["https://a"]}, "clusters[0].cluster.server is a list; expected a string"),
        ({"certificate-authority-data": 12}, "certificate-authority-data is the number 12; expected a string"),
        ({"certificate-authority": True}, "certificate-authority is the boolean true; expected a string"),
    ],
    ids=["string-false", "string-true", "number", "server-list", "ca-data-number", "ca-bool"],
)
def test_a_field_of_the_wrong_type_names_file_and_field(cluster: dict[str, Any], expected: str) -> None:
    with pytest.raises(InputError) as caught:
        parse(kubeconfig(cluster={"server": "https://api", **cluster}))
    assert str(caught.value).startswith("/etc/kubernetes/kubeconfig: clusters[0].cluster.")
    assert str(caught.value).endswith(expected)


@pytest.mark.parametrize(("value", "insecure"), [("true", True), ("yes", True), ("false", False), ("null", False)])
def test_insecure_skip_tls_verify_is_a_yaml_boolean(value: str, insecure: bool) -> None:
    text = kubeconfig(cluster={"server": "https://api"}) + ""
    text = text.replace("server: https://api", f"server: https://api\n    insecure-skip-tls-verify: {value}")
    assert parse(text).insecure is insecure


def test_insecure_with_a_ca_is_refused_as_kubectl_does() -> None:
    cluster = {"server": "https://api", "insecure-skip-tls-verify": True, "certificate-authority-data": b64(CA)}
    with pytest.raises(InputError, match="sets both insecure-skip-tls-verify and a certificate-authority"):
        parse(kubeconfig(cluster=cluster))


def test_insecure_warns_at_every_run(caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(2):
        with _client("https://api", insecure=True):
            pass
    warnings = [r for r in caplog.records if "insecure-skip-tls-verify" in r.getMessage()]
    assert len(warnings) == 2 and all(r.levelname == "WARNING" for r in warnings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "contexts:\n- {name: ctx, context: {cluster: c}}\n- {name: ctx, context: {cluster: d}}\n"
            "current-context: ctx\n",
            "contexts[0] and contexts[1] are both named 'ctx'; expected each name once",
        ),
        (kubeconfig(user={"token": "a\nb"}), "token 'a\\nb' is not allowed; expected a bearer token"),
        (kubeconfig(cluster={"server": "https://api:port"}), "server 'https://api:port' is not an https:// URL"),
        ("contexts: {}\n", "kubeconfig.contexts is a mapping; expected a list"),
        ("current-context: 7\n", "kubeconfig.current-context is the number 7; expected a string"),
        ("contexts: [7]\ncurrent-context: a\n", "contexts[0] is the number 7; expected a mapping with name and"),
    ],
    ids=["duplicate-context", "token-newline", "bad-port", "contexts-mapping", "current-number", "context-number"],
)
def test_malformed_kubeconfig_structure(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        parse(text)
    assert expected in str(caught.value)


def test_token_file_with_a_newline_inside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc\ndef\n")
    with pytest.raises(InputError, match="token: token 'abc\\\\ndef' is not allowed"):
        parse(kubeconfig(user={"tokenFile": "token"}), base=tmp_path)


# --- names in URLs, exact versions, bounded answers ------------------------------------------------


@pytest.mark.parametrize("name", ["../namespaces/kube-system/configmaps/x", "Node-1", "a/b", "", "a" * 254])
def test_a_node_name_that_is_not_a_dns_subdomain_never_reaches_a_url(name: str) -> None:
    with http_server() as server, _client(server.base) as client:
        calls: list[Callable[[], object]] = [lambda: client.node(name),
                                             lambda: client.annotate_node(name, {"a/b": "true"})]
        for call in calls:
            with pytest.raises(InputError) as caught:
                call()
            assert "node name" in str(caught.value) and "expected a DNS-1123 subdomain" in str(caught.value)
            assert "set [kubernetes] node_name" in str(caught.value)
        assert server.requests == []


def test_path_segments_are_quoted_whole() -> None:
    with http_server() as server, _client(server.base) as client:
        assert client.configmap_value("tectonic-system", "a/../b", "k") is None
        assert client.configmap_value("ns?x=1", "c#d", "k") is None
    assert server.requests == ["/api/v1/namespaces/tectonic-system/configmaps/a%2F..%2Fb",
                               "/api/v1/namespaces/ns%3Fx%3D1/configmaps/c%23d"]


@pytest.mark.parametrize("version", ["v1.8.4\n", " v1.8.4", "v1.8.4+coreos.0 extra", "latest", "v1.8.4\"x"])
def test_git_version_is_checked_exactly_as_it_is_used(version: str) -> None:
    with http_server() as server:
        server.routes["/version"] = (200, json.dumps({"gitVersion": version}).encode())
        with _client(server.base) as client, pytest.raises(InputError) as caught:
            client.version()
    assert f"gitVersion {version!r} is not allowed; expected a Kubernetes version" in str(caught.value)
    assert f"{server.base}/version" in str(caught.value)


@pytest.mark.parametrize(
    ("path", "body", "call", "expected"),
    [
        ("/api/v1/namespaces/ns/configmaps/m", b'{"data": [1]}', "configmap", "data is a list; expected a mapping"),
        ("/api/v1/nodes/n", b'{"metadata": []}', "node", "node n: metadata is a list; expected a mapping"),
        ("/api/v1/nodes/n", b'{"metadata": {"labels": "a"}}', "node", "metadata.labels is 'a'; expected a mapping"),
        ("/version", b'{"gitVersion": "v1.8.4", "gitVersion": "v1.9.0"}', "version", "key 'gitVersion' appears twice"),
        ("/version", b"[" * 100000, "version", "JSON nested too deeply"),
    ],
    ids=["configmap-data-list", "metadata-list", "labels-string", "duplicate-key", "deep"],
)
def test_answers_of_the_wrong_shape_are_network_errors(path: str, body: bytes, call: str, expected: str) -> None:
    with http_server() as server:
        server.routes[path] = (200, body)
        with _client(server.base) as client, pytest.raises(NetworkError) as caught:
            calls: dict[str, Callable[[], object]] = {
                "configmap": lambda: client.configmap_value("ns", "m", "k"), "node": lambda: client.node("n"),
                "version": client.version}
            calls[call]()
    assert expected in str(caught.value)


def test_an_oversized_answer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "MAX_API_BYTES", 100)
    with http_server() as server:
        server.routes["/version"] = (200, b" " * 101)
        with _client(server.base) as client, pytest.raises(NetworkError, match="is larger than 100 bytes"):
            client.version()


# --- an api-server that is not there, or slow -----------------------------------------------------

def _retries_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name.startswith("urllib3") and r.getMessage().startswith("Retrying"))


def _network(retries: int, read_timeout: str = "5") -> NetworkSettings:
    return make_config({"network.retries": str(retries), "network.backoff_factor": "0.01",
                        "network.connect_timeout": "2", "network.read_timeout": read_timeout}).network


def test_a_refused_connection_gets_few_retries_when_the_caller_can_do_without(caplog: pytest.LogCaptureFixture) -> None:
    with http_server() as server:
        base = server.base  # closed again: nothing listens there
    creds = Credentials(server=base, ca_pem=None, cert_pem=None, key_pem=None, token="t", insecure=False)
    with KubeClient(creds, _network(5), connect_retries=2) as client, pytest.raises(UnreachableError) as caught:
        client.version()
    assert str(caught.value) == f"api-server version: cannot reach {base}/version: connection refused"
    assert _retries_logged(caplog) == 2
    caplog.clear()
    with KubeClient(creds, _network(5)) as client, pytest.raises(UnreachableError):
        client.version()  # without a fallback: the configured retries
    assert _retries_logged(caplog) == 5


class _Slow(http.server.BaseHTTPRequestHandler):
    """Answers every request, too late."""

    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        time.sleep(0.5)
        with contextlib.suppress(OSError):
            self.send_response(200)
            self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_slow_api_server_gets_every_configured_retry_and_is_not_unreachable() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.requests = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        creds = Credentials(server=base, ca_pem=None, cert_pem=None, key_pem=None, token="t", insecure=False)
        with KubeClient(creds, _network(2, read_timeout="0.1"), connect_retries=0) as client, \
                pytest.raises(NetworkError) as caught:
            client.version()
        assert not isinstance(caught.value, UnreachableError), caught.value
        assert server.requests == ["/version"] * 3  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
