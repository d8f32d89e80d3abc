"""An answer that ends before its Content-Length is a broken-off answer,
named as such, whatever urllib3 the node has (1.26 returns it as if whole)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import urllib3

from torcx_tectonic.edges import http
from torcx_tectonic.errors import NetworkError
from torcx_tectonic.torcx.bucket import Bucket

from .helpers import make_config


@contextmanager
def short_answer(announced: int, body: bytes) -> Iterator[str]:
    """A server that answers one request: it announces ``announced`` bytes,
    sends ``body`` and closes; its URL. (Its thread ends with the block: a
    thread left waiting would take the SIGTERM the runner tests send.)"""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def serve() -> None:
        with server:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\n\r\n".encode() + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/file"
    finally:
        thread.join(15)


#: urllib3 2 notices a short body itself (IncompleteRead); 1.26, Debian 12's, does not.
OLD_URLLIB3 = int(urllib3.__version__.split(".")[0]) < 2


def test_a_short_answer_is_broken_off_not_whole() -> None:
    network = make_config({"network.retries": "0"}).network
    with short_answer(1000, b"x" * 100) as url, http.request(http.make_session(network), "GET", url, "a manifest",
                                                             timeout=(2, 2), stream=True) as response, \
            pytest.raises(NetworkError, match=f"a manifest: reading {url} broke off after") as raised:
        http.read_body(response, 1 << 20, "a manifest", url)
    if OLD_URLLIB3:
        assert str(raised.value).endswith("broke off after 100 of the 1000 bytes announced: the connection closed "
                                          "early")


def test_a_short_download_is_broken_off_not_whole() -> None:
    config = make_config({"network.retries": "0"})
    with short_answer(1000, b"x" * 100) as url, Bucket(config) as bucket, pytest.raises(
            NetworkError, match=f"an addon: download from {url} broke off after") as raised:
        b"".join(bucket.download(url, "an addon"))
    if OLD_URLLIB3:
        assert "broke off after 100 of the 1000 bytes announced" in str(raised.value)


def test_a_whole_answer_and_a_longer_one_read_what_was_announced() -> None:
    network = make_config({"network.retries": "0"}).network
    for body in (b"y" * 10, b"y" * 25):
        with short_answer(10, body) as url, http.request(http.make_session(network), "GET", url, "x",
                                                         timeout=(2, 2), stream=True) as response:
            assert http.read_body(response, 1 << 20, "x", url) == b"y" * 10
