"""HTTP sessions with timeouts and bounded retries with backoff.

requests honours ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` from the unit's
environment, which is how nodes behind a proxy reach the bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .config import NetworkSettings
from .errors import NetworkError

RETRY_STATUSES = (429, 500, 502, 503, 504)


def make_session(network: NetworkSettings) -> requests.Session:
    """A session whose every request retries connection errors and
    transient statuses a bounded number of times."""
    retry = Retry(
        total=network.retries,
        connect=network.retries,
        read=network.retries,
        status=network.retries,
        backoff_factor=network.backoff_factor,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD", "PATCH"}),
        raise_on_status=False,
    )
    session = requests.Session()
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
    ``what`` and the URL; the response is closed when the block ends."""
    try:
        response = session.request(method, url, **kwargs)
    except requests.exceptions.SSLError as err:
        raise NetworkError(f"{what}: TLS verification failed for {url}: {_short(err)}") from None
    except requests.RequestException as err:
        raise NetworkError(f"{what}: cannot reach {url}: {_short(err)}") from None
    try:
        yield response
    finally:
        response.close()


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) < 300 else text[:297] + "..."
