"""Self-test of the stand-ins' faults: a fault test proves nothing unless the
bucket and the api-server really answer as broken as they claim. Plain
sockets and urllib3 check each fault byte for byte."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simnode.bucket import Bucket, Signer

BOARD, OS = "amd64-usr", "1632.3.0"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bucket]:
    with Signer() as signer, Bucket(tmp_path_factory.mktemp("bucket"), signer) as served:
        served.add_release(BOARD, OS, ["17.03"], "17.03")
        served.serve()
        yield served


def _raw(bucket: Bucket, path: str, method: str = "GET", timeout: float = 10) -> bytes:
    """The whole answer, as the server sent it, until it closed the connection."""
    with socket.create_connection(("127.0.0.1", bucket.port), timeout=timeout) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _addon(bucket: Bucket) -> tuple[str, bytes]:
    path = bucket.addon_path(BOARD, OS, "17.03")
    return f"/addons/{BOARD}/{OS}/{path.name}", path.read_bytes()


def _with_fault(bucket: Bucket, url: str, **fault: int) -> tuple[bytes, bytes]:
    """The head and the body the bucket sends for ``url`` with ``fault`` set on its addons."""
    bucket.set_fault("/addons/", **fault)
    try:
        head, _, sent = _raw(bucket, url).partition(b"\r\n\r\n")
    finally:
        bucket.clear_faults()
    return head, sent


def test_a_truncated_body_announces_it_all_and_sends_a_part(bucket: Bucket) -> None:
    url, body = _addon(bucket)
    head, sent = _with_fault(bucket, url, body_bytes=10)
    assert f"Content-Length: {len(body)}".encode() in head and sent == body[:10]


def test_a_body_longer_than_announced(bucket: Bucket) -> None:
    url, body = _addon(bucket)
    head, sent = _with_fault(bucket, url, content_length=10)
    assert b"Content-Length: 10\r\n" in head and sent == body


def test_a_stalled_body_is_held_until_the_faults_are_cleared(bucket: Bucket) -> None:
    url, body = _addon(bucket)
    bucket.set_fault("/addons/", body_bytes=5, stall=60)
    answers: list[bytes] = []
    reader = threading.Thread(target=lambda: answers.append(_raw(bucket, url, timeout=60)))
    reader.start()
    deadline = time.monotonic() + 30
    while bucket.stalled != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bucket.stalled == 1 and answers == []
    bucket.clear_faults()
    reader.join(30)
    assert answers and answers[0].partition(b"\r\n\r\n")[2] == body[:5] and bucket.stalled == 0


def test_a_redirect_and_a_fault_for_one_method_a_few_times(bucket: Bucket) -> None:
    url, _ = _addon(bucket)
    bucket.set_fault("/addons/", redirect=url, method="GET", times=2)
    try:
        statuses = [_raw(bucket, url).split(b" ", 2)[1] for _ in range(3)]
        assert statuses == [b"302", b"302", b"200"]
        assert _raw(bucket, url, method="HEAD").split(b" ", 2)[1] == b"200"
    finally:
        bucket.clear_faults()


def test_the_bucket_closes_with_a_body_still_held(tmp_path: Path) -> None:
    with Signer() as signer, Bucket(tmp_path / "b", signer) as served:
        served.add_release(BOARD, OS, ["17.03"], "17.03")
        served.serve()
        url, _ = _addon(served)
        served.set_fault("/addons/", body_bytes=5, stall=600)
        reader = threading.Thread(target=lambda: _raw(served, url, timeout=60), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while served.stalled != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    reader.join(30)
    assert not reader.is_alive()  # closing let go of the held answer
