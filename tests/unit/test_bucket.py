"""bucket and http: signed manifests and addon downloads from a local HTTP bucket."""

from __future__ import annotations

import http.server
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from requests.adapters import HTTPAdapter

from torcx_tectonic.config import Config
from torcx_tectonic.edges import progress as progress_module
from torcx_tectonic.edges.http import make_session, request, timeouts
from torcx_tectonic.errors import InputError, NetworkError, VerificationError
from torcx_tectonic.torcx import bucket as bucket_module
from torcx_tectonic.torcx.bucket import Bucket, load_manifest

from .helpers import Keys, RoutedServer, http_server, make_config, sha512

ADDON = b"tarball bytes " * 5000
MANIFEST = json.dumps(
    {
        "kind": "torcx-package-list-v0",
        "value": {
            "packages": [
                {
                    "name": "docker",
                    "defaultVersion": "17.03",
                    "versions": [
                        {
                            "version": "17.03",
                            "hash": "sha512-" + sha512(ADDON),
                            "locations": [{"url": "https://b/docker.tgz"}],
                        }
                    ],
                }
            ]
        },
    }
).encode()
MANIFEST_PATH = "/manifests/amd64-usr/1632.3.0/torcx_manifest.json"


def _config(server: RoutedServer, keyring: Path, verify: str = "yes") -> Config:
    return make_config(
        {
            "torcx.manifest_url": server.base + "/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json",
            "torcx.keyring": str(keyring),
            "torcx.verify_signatures": verify,
            "network.retries": "0",
            "network.connect_timeout": "2",
            "network.read_timeout": "5",
        }
    )


@pytest.fixture
def server() -> Iterator[RoutedServer]:
    with http_server() as running:
        yield running


def test_signed_manifest_is_fetched_verified_and_parsed(server: RoutedServer, keys: Keys) -> None:
    server.routes[MANIFEST_PATH] = (200, MANIFEST)
    server.routes[MANIFEST_PATH + ".asc"] = (200, keys.sign(MANIFEST))
    with Bucket(_config(server, keys.keyring_armored)) as bucket:
        fetched = bucket.manifest("amd64-usr", "1632.3.0")
    assert fetched.url == server.base + MANIFEST_PATH
    assert fetched.raw == MANIFEST
    assert fetched.packages.versions_of("docker") == ("17.03",)
    assert server.requests == [MANIFEST_PATH, MANIFEST_PATH + ".asc"]


def test_unsigned_manifest_is_refused(server: RoutedServer, keys: Keys) -> None:
    server.routes[MANIFEST_PATH] = (200, MANIFEST)
    with Bucket(_config(server, keys.keyring)) as bucket, pytest.raises(VerificationError) as caught:
        bucket.manifest("amd64-usr", "1632.3.0")
    assert str(caught.value) == (
        f"manifest for amd64-usr 1632.3.0 ({server.base}{MANIFEST_PATH}) is not signed: "
        f"{server.base}{MANIFEST_PATH}.asc does not exist; expected a detached OpenPGP signature"
    )


def test_empty_signature_is_refused(server: RoutedServer, keys: Keys) -> None:
    server.routes[MANIFEST_PATH] = (200, MANIFEST)
    server.routes[MANIFEST_PATH + ".asc"] = (200, b"")
    with Bucket(_config(server, keys.keyring)) as bucket, pytest.raises(VerificationError) as caught:
        bucket.manifest("amd64-usr", "1632.3.0")
    assert f"manifest for amd64-usr 1632.3.0 ({server.base}{MANIFEST_PATH}): the signature is empty" in str(
        caught.value
    )


def test_tampered_manifest_is_refused(server: RoutedServer, keys: Keys) -> None:
    server.routes[MANIFEST_PATH] = (200, MANIFEST.replace(b"17.03", b"17.09"))
    server.routes[MANIFEST_PATH + ".asc"] = (200, keys.sign(MANIFEST))
    with Bucket(_config(server, keys.keyring)) as bucket, pytest.raises(VerificationError, match="bad signature"):
        bucket.manifest("amd64-usr", "1632.3.0")


def test_manifest_signed_by_another_key_is_refused(server: RoutedServer, keys: Keys) -> None:
    server.routes[MANIFEST_PATH] = (200, MANIFEST)
    server.routes[MANIFEST_PATH + ".asc"] = (200, keys.sign(MANIFEST, key="other"))
    with Bucket(_config(server, keys.keyring)) as bucket, pytest.raises(VerificationError, match="NO_PUBKEY"):
        bucket.manifest("amd64-usr", "1632.3.0")


def test_verification_can_be_turned_off(server: RoutedServer, tmp_path: Path) -> None:
    server.routes[MANIFEST_PATH] = (200, MANIFEST)
    with Bucket(_config(server, tmp_path / "no-keyring.gpg", verify="no")) as bucket:
        assert bucket.manifest("amd64-usr", "1632.3.0").raw == MANIFEST
    assert server.requests == [MANIFEST_PATH]


def test_signed_but_malformed_manifest_is_an_input_error(server: RoutedServer, keys: Keys) -> None:
    bad = b'{"kind": "torcx-package-list-v0", "value": {"packages": [{"name": "../docker", "versions": []}]}}'
    server.routes[MANIFEST_PATH] = (200, bad)
    server.routes[MANIFEST_PATH + ".asc"] = (200, keys.sign(bad))
    with Bucket(_config(server, keys.keyring)) as bucket, pytest.raises(InputError) as caught:
        bucket.manifest("amd64-usr", "1632.3.0")
    assert f"{server.base}{MANIFEST_PATH}: value.packages[0]: package name '../docker' is not allowed" in str(
        caught.value
    )


def test_missing_manifest(server: RoutedServer, keys: Keys) -> None:
    with Bucket(_config(server, keys.keyring)) as bucket, pytest.raises(NetworkError) as caught:
        bucket.manifest("arm64-usr", "1688.5.3")
    assert str(caught.value) == (
        f"manifest for arm64-usr 1688.5.3: GET {server.base}/manifests/arm64-usr/1688.5.3/"
        "torcx_manifest.json answered 404"
    )


def test_oversized_manifest_is_refused(server: RoutedServer, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bucket_module, "MAX_MANIFEST_BYTES", 1000)
    server.routes[MANIFEST_PATH] = (200, b" " * 5000)
    with (
        Bucket(_config(server, keys.keyring)) as bucket,
        pytest.raises(NetworkError, match="is larger than 1000 bytes"),
    ):
        bucket.manifest("amd64-usr", "1632.3.0")


def test_download_streams_the_addon(server: RoutedServer, keys: Keys) -> None:
    server.routes["/docker.tgz"] = (200, ADDON)
    with Bucket(_config(server, keys.keyring)) as bucket:
        assert b"".join(bucket.download(server.base + "/docker.tgz", "docker:17.03.torcx.tgz")) == ADDON


def test_download_of_a_missing_addon(server: RoutedServer, keys: Keys) -> None:
    with Bucket(_config(server, keys.keyring)) as bucket, pytest.raises(NetworkError) as caught:
        b"".join(bucket.download(server.base + "/gone.tgz", "docker:17.03.torcx.tgz for OS 1688.5.3"))
    assert str(caught.value) == f"docker:17.03.torcx.tgz for OS 1688.5.3: GET {server.base}/gone.tgz answered 404"


def test_unreachable_bucket(keys: Keys) -> None:
    with http_server() as stopped:
        base = stopped.base
    config = make_config(
        {
            "torcx.manifest_url": base + "/{{.Board}}/{{.OSVersion}}.json",
            "network.retries": "0",
            "torcx.keyring": str(keys.keyring),
        }
    )
    with Bucket(config) as bucket, pytest.raises(NetworkError) as caught:
        bucket.manifest("amd64-usr", "1632.3.0")
    assert f"manifest for amd64-usr 1632.3.0: cannot reach {base}/amd64-usr/1632.3.0.json" in str(caught.value)


def test_load_manifest_saved_by_an_earlier_step(tmp_path: Path) -> None:
    saved = tmp_path / "manifest-1632.3.0.json"
    saved.write_bytes(MANIFEST)
    assert load_manifest(saved).versions_of("docker") == ("17.03",)
    saved.write_bytes(b"{")
    with pytest.raises(InputError, match=f"{saved}:1: not valid JSON"):
        load_manifest(saved)


# --- http ---------------------------------------------------------------------------------


def test_session_retries_are_bounded_with_backoff() -> None:
    network = make_config({"network.retries": "3", "network.backoff_factor": "0.5"}).network
    session = make_session(network)
    adapter = session.get_adapter("https://bucket")
    assert isinstance(adapter, HTTPAdapter)
    retry = adapter.max_retries
    assert (retry.total, retry.connect, retry.read, retry.status) == (3, 3, 3, 3)
    assert retry.backoff_factor == 0.5
    assert set(retry.status_forcelist or ()) == {429, 500, 502, 503, 504}
    assert session.get_adapter("http://bucket") is adapter
    assert timeouts(network) == (10.0, 60.0)


def test_session_retries_a_transient_error(server: RoutedServer) -> None:
    network = make_config({"network.retries": "2", "network.backoff_factor": "0.01"}).network
    server.routes["/flaky"] = (503, b"busy")
    with request(make_session(network), "GET", server.base + "/flaky", "flaky") as response:
        assert response.status_code == 503
    assert server.requests == ["/flaky"] * 3


# --- answers of the wrong shape ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Content-Length": "abc"}, "answered Content-Length 'abc'; expected a number of bytes"),
        ({"Content-Length": "-1"}, "answered Content-Length '-1'; expected a number of bytes"),
        ({"Content-Length": "9" * 30}, f"answered Content-Length '{'9' * 30}'; expected a number of bytes"),
    ],
    ids=["letters", "negative", "huge"],
)
def test_a_content_length_that_is_not_a_size_is_a_network_error(
    server: RoutedServer, keys: Keys, headers: dict[str, str], expected: str
) -> None:
    server.routes["/docker.tgz"] = (200, ADDON, {**headers, "Connection": "close"})
    server.routes[MANIFEST_PATH] = (200, MANIFEST, {**headers, "Connection": "close"})
    with Bucket(_config(server, keys.keyring, verify="no")) as bucket:
        with pytest.raises(NetworkError) as caught:
            b"".join(bucket.download(server.base + "/docker.tgz", "docker:17.03.torcx.tgz"))
        assert str(caught.value) == f"docker:17.03.torcx.tgz: {server.base}/docker.tgz {expected}"
        with pytest.raises(NetworkError, match=re.escape(expected)):
            bucket.manifest("amd64-usr", "1632.3.0")


def test_an_announced_oversized_manifest_is_refused_before_reading(
    server: RoutedServer, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bucket_module, "MAX_MANIFEST_BYTES", 1000)
    server.routes[MANIFEST_PATH] = (200, b"", {"Content-Length": "5000", "Connection": "close"})
    with Bucket(_config(server, keys.keyring)) as bucket, pytest.raises(NetworkError) as caught:
        bucket.manifest("amd64-usr", "1632.3.0")
    assert "is larger than 1000 bytes (Content-Length 5000)" in str(caught.value)


def test_a_missing_ca_bundle_is_an_input_error(server: RoutedServer, tmp_path: Path) -> None:
    config = make_config({"network.ca_bundle": str(tmp_path / "missing.pem")})
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'missing.pem'}: missing; expected a PEM CA bundle")):
        Bucket(config)


def test_a_saved_manifest_that_is_a_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory; expected a manifest saved by an earlier step"):
        load_manifest(tmp_path)


# --- progress of a long download ---------------------------------------------------------------------

class _Stalling(http.server.BaseHTTPRequestHandler):
    """Sends half of the addon, waits until the test lets it go on, sends the rest."""

    go_on = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(ADDON)))
        self.end_headers()
        self.wfile.write(ADDON[: len(ADDON) // 2])
        self.wfile.flush()
        self.go_on.wait(30)
        self.wfile.write(ADDON[len(ADDON) // 2:])

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_stalled_download_still_reports_its_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "PROGRESS_EVERY_SECS", 0.01)
    lines: list[str] = []

    class Seen(logging.Handler):
        """Lets the stalled server go on once three progress lines were logged meanwhile."""

        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())
            if len(lines) >= 3:
                _Stalling.go_on.set()

    seen = Seen(logging.INFO)
    logger = logging.getLogger("torcx_tectonic.edges.progress")
    logger.addHandler(seen)
    monkeypatch.setattr(logger, "level", logging.INFO)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stalling)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/docker.tgz"
        with Bucket(make_config({"network.retries": "0"})) as bucket:
            received = b"".join(bucket.download(url, "docker:17.03.torcx.tgz for OS 1688.5.3"))
    finally:
        logger.removeHandler(seen)
        server.shutdown()
        server.server_close()
    assert received == ADDON
    assert _Stalling.go_on.is_set(), "the server was never let go on: no progress while it stalled"
    pattern = rf"docker:17.03.torcx.tgz for OS 1688.5.3: \d+ of {len(ADDON)} bytes \(\d+%\), [0-9.]+ MiB/s"
    assert len(lines) >= 3 and all(re.fullmatch(pattern, line) for line in lines), lines


def test_a_progress_line_names_bytes_total_and_rate() -> None:
    progress = progress_module.Progress("docker:17.03.torcx.tgz", 4 * progress_module.MIB)
    assert progress.line(progress_module.MIB, 2.0, 3 * progress_module.MIB) == (
        f"docker:17.03.torcx.tgz: {progress_module.MIB} of {4 * progress_module.MIB} bytes (25%), 1.5 MiB/s")
    assert progress_module.Progress("x", None).line(10, 0.0, 10) == "x: 10 of ? bytes, 0.0 MiB/s"
