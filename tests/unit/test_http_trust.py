"""Trust anchors and proxies: the environment's CA bundle variables never
replace them (a real local TLS server), the proxy variables still apply."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from torcx_tectonic.cluster.kube import Credentials, KubeClient
from torcx_tectonic.edges import http
from torcx_tectonic.errors import NetworkError
from torcx_tectonic.torcx.bucket import Bucket

from .helpers import RoutedServer, TlsFiles, http_server, make_config, self_signed

pytest.importorskip("cryptography")

MANIFEST = b'{"kind": "torcx-package-list-v0", "value": {"packages": []}}'
MANIFEST_PATH = "/amd64-usr/1632.3.0/torcx_manifest.json"
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_VARIABLES + PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsFiles, TlsFiles]:
    """The server's certificate and an unrelated one."""
    directory = tmp_path_factory.mktemp("tls")
    return self_signed(directory, "server"), self_signed(directory, "other")


@pytest.fixture
def server(certs: tuple[TlsFiles, TlsFiles]) -> Iterator[RoutedServer]:
    with http_server(tls=certs[0]) as running:
        running.routes["/version"] = (200, b'{"gitVersion": "v1.8.4+coreos.0"}')
        running.routes[MANIFEST_PATH] = (200, MANIFEST)
        yield running


def _kube(server: RoutedServer, ca: Path | None) -> KubeClient:
    network = make_config({"network.retries": "0", "network.connect_timeout": "2", "network.read_timeout": "2"})
    creds = Credentials(server=server.base, ca_pem=ca.read_bytes() if ca else None, cert_pem=None, key_pem=None,
                        token="t", insecure=False)
    return KubeClient(creds, network.network)


def _bucket(server: RoutedServer, ca_bundle: Path | None) -> Bucket:
    values = {"torcx.manifest_url": server.base + "/{{.Board}}/{{.OSVersion}}/torcx_manifest.json",
              "torcx.verify_signatures": "no", "network.retries": "0", "network.connect_timeout": "2",
              "network.read_timeout": "2"}
    if ca_bundle is not None:
        values["network.ca_bundle"] = str(ca_bundle)
    return Bucket(make_config(values))


def _call(service: str, server: RoutedServer, anchor: Path | None) -> Callable[[], object]:
    """One request to ``service`` trusting ``anchor`` (the kubeconfig's CA or
    [network] ca_bundle; None: the system store)."""
    def call() -> object:
        if service == "api-server":
            with _kube(server, anchor) as client:
                return client.version()
        with _bucket(server, anchor) as bucket:
            return bucket.manifest("amd64-usr", "1632.3.0")
    return call


@pytest.mark.parametrize("variable", CA_VARIABLES)
@pytest.mark.parametrize("service", ["api-server", "bucket"])
def test_the_configured_anchor_is_used_whatever_the_environment_says(
    server: RoutedServer, certs: tuple[TlsFiles, TlsFiles], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    variable: str, service: str,
) -> None:
    monkeypatch.setenv(variable, str(tmp_path / "bogus-bundle.pem"))
    _call(service, server, certs[0].cert)()
    monkeypatch.setenv(variable, str(certs[0].cert))  # trusts the server, but is not the configured anchor
    with pytest.raises(NetworkError, match="TLS verification failed"):
        _call(service, server, certs[1].cert)()


@pytest.mark.parametrize("variable", CA_VARIABLES)
@pytest.mark.parametrize("service", ["api-server", "bucket"])
def test_without_an_anchor_the_system_store_is_used_not_the_environment(
    server: RoutedServer, certs: tuple[TlsFiles, TlsFiles], monkeypatch: pytest.MonkeyPatch, variable: str,
    service: str,
) -> None:
    monkeypatch.setenv(variable, str(certs[0].cert))
    with pytest.raises(NetworkError, match="TLS verification failed"):
        _call(service, server, None)()


def test_proxy_variables_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bucket reached through HTTP_PROXY, and directly when NO_PROXY names it."""
    with http_server() as proxy, http_server() as bucket_host:
        url = bucket_host.base + MANIFEST_PATH
        proxy.routes[url] = (200, MANIFEST)  # a proxy is asked for the absolute URL
        bucket_host.routes[MANIFEST_PATH] = (200, MANIFEST)
        monkeypatch.setenv("HTTP_PROXY", proxy.base)
        with _bucket(bucket_host, None) as bucket:
            bucket.manifest("amd64-usr", "1632.3.0")
        assert (proxy.requests, bucket_host.requests) == ([url], [])
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with _bucket(bucket_host, None) as bucket:
            bucket.manifest("amd64-usr", "1632.3.0")
        assert (proxy.requests, bucket_host.requests) == ([url], [MANIFEST_PATH])


def test_a_redirect_loop_ends_after_a_few_redirects(bucket: RoutedServer) -> None:
    bucket.routes = {"/loop": (302, b"", {"Location": "/loop"})}
    session = http.make_session(make_config({"network.retries": "0"}).network)
    expected = f"cannot reach {bucket.base}/loop: Exceeded {http.MAX_REDIRECTS} redirects"
    with pytest.raises(NetworkError, match=expected), \
            http.request(session, "GET", f"{bucket.base}/loop", "a manifest", timeout=(2, 2)):
        pass
    assert len(bucket.requests) == http.MAX_REDIRECTS + 1
