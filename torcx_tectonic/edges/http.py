"""HTTP sessions with timeouts, bounded retries with backoff, pinned trust
anchors and bounded answers.

requests honours ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` from the unit's
environment, which is how nodes behind a proxy reach the bucket; that stays.
What requests also takes from the environment, ``REQUESTS_CA_BUNDLE`` and
``CURL_CA_BUNDLE``, would *replace* the trust anchors a session was given
(``merge_environment_settings`` puts them over ``session.verify``), so every
request passes its session's anchors explicitly, which requests then keeps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.exceptions import NewConnectionError
from urllib3.util.retry import Retry

from ..config import NetworkSettings
from ..errors import NetworkError, UnreachableError, shown

RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Redirects followed at most (requests' default is 30): a bucket or proxy
#: that redirects in a loop fails the request quickly, naming the URL.
MAX_REDIRECTS = 5
#: How much of an answer is read at once.
CHUNK_BYTES = 1 << 20
#: A Content-Length: digits only, fewer than would overflow anything.
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)


def make_session(network: NetworkSettings, *, connect_retries: int | None = None) -> requests.Session:
    """A session whose every request retries connection errors and
    transient statuses a bounded number of times; ``connect_retries``
    bounds the retries of a connection that cannot be made at all (for a
    caller with somewhere else to go), the configured retries by default."""
    retry = Retry(
        total=network.retries,
        connect=network.retries if connect_retries is None else min(connect_retries, network.retries),
        read=network.retries,
        status=network.retries,
        backoff_factor=network.backoff_factor,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD", "PATCH"}),
        raise_on_status=False,
    )
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    # What verify=True means to requests, named: the environment cannot replace a path.
    session.verify = DEFAULT_CA_BUNDLE_PATH
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "torcx-tectonic"
    return session


def timeouts(network: NetworkSettings) -> tuple[float, float]:
    return (network.connect_timeout, network.read_timeout)


@contextmanager
def request(session: requests.Session, method: str, url: str, what: str, **kwargs: Any) -> Iterator[requests.Response]:
    """Send a request, turning transport failures into NetworkError naming
    ``what`` and the URL; the response is closed when the block ends. The
    session's trust anchors are passed explicitly, so the environment's CA
    bundle variables never replace them; its proxy variables still apply."""
    try:
        response = session.request(method, url, verify=session.verify, **kwargs)
    except requests.exceptions.SSLError as err:
        raise NetworkError(f"{what}: TLS verification failed for {url}: {_short(err)}") from None
    except (requests.exceptions.ConnectTimeout, requests.exceptions.ConnectionError) as err:
        why = unreachable(err)
        if why is None:
            raise NetworkError(f"{what}: cannot reach {url}: {_short(err)}") from None
        raise UnreachableError(f"{what}: cannot reach {url}: {why}") from None
    except requests.RequestException as err:
        raise NetworkError(f"{what}: cannot reach {url}: {_short(err)}") from None
    try:
        yield response
    finally:
        response.close()


def unreachable(err: requests.RequestException) -> str | None:
    """Why no connection could be made at all ("connection refused", ...), or
    None when one was made (or a proxy stood between) and broke later."""
    if isinstance(err, requests.exceptions.ProxyError):
        return None
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return "the connection timed out"
    reason = getattr(err.args[0], "reason", None) if err.args else None
    if not isinstance(reason, NewConnectionError):
        return None
    cause: BaseException | None = reason
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    return _short(reason)


def content_length(response: requests.Response, what: str, url: str) -> int | None:
    """The announced size of an answer, if it announces one."""
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    if not _DIGITS.fullmatch(value.strip()):
        raise NetworkError(f"{what}: {url} answered Content-Length {shown(value)}; expected a number of bytes")
    return int(value)


def read_body(response: requests.Response, limit: int, what: str, url: str) -> bytes:
    """A whole answer of at most ``limit`` bytes (after any decompression):
    larger ones are refused, announced or not; one that ends before its
    Content-Length is a broken-off answer."""
    announced = content_length(response, what, url)
    if announced is not None and announced > limit:
        raise NetworkError(f"{what}: {url} is larger than {limit} bytes (Content-Length {announced})")
    data = bytearray()
    try:
        for chunk in response.iter_content(CHUNK_BYTES):
            data += chunk
            if len(data) > limit:
                raise NetworkError(f"{what}: {url} is larger than {limit} bytes")
    except requests.RequestException as err:
        raise NetworkError(f"{what}: reading {url} broke off after {len(data)} bytes: {_short(err)}") from None
    check_complete(response, announced, len(data), f"{what}: reading {url}")
    return bytes(data)


def check_complete(response: requests.Response, announced: int | None, received: int, doing: str) -> None:
    """Refuse an answer that ended before the Content-Length it announced.
    urllib3 before 2.0 (Debian 12 ships 1.26) returns such a body as if it
    were whole, so a connection closed early would otherwise surface as a
    bad signature or a wrong hash, far from its cause. (A compressed answer's
    Content-Length counts the compressed bytes: it is not compared.)"""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if announced is not None and received < announced and encoding == "identity":
        raise NetworkError(f"{doing} broke off after {received} of the {announced} bytes announced: the "
                           "connection closed early")


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) < 300 else text[:297] + "..."
