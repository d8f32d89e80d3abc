"""The release bucket: signed manifests and addon downloads.

A manifest is used only after its detached signature verified (unless the
operator turned verification off); an addon is streamed, hashed on the way
and enters a store only when its sha512 matches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from .config import Config
from .errors import NetworkError, VerificationError
from .http import check_complete, content_length, make_session, read_body, request, timeouts
from .inputfile import read_bytes
from .manifest import CHUNK_BYTES, PackageList, manifest_url, parse_package_list
from .signature import verify_detached

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 8 << 20
PROGRESS_EVERY_SECS = 5.0


@dataclass(frozen=True)
class FetchedManifest:
    """A verified manifest and its raw bytes (kept so later steps can use
    it without fetching again)."""

    url: str
    raw: bytes
    packages: PackageList


class Bucket:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.session = make_session(config.network)
        if config.network.ca_bundle is not None:
            # checked now: requests would raise a bare OSError for a missing bundle
            read_bytes(config.network.ca_bundle, "a PEM CA bundle ([network] ca_bundle)")
            self.session.verify = str(config.network.ca_bundle)

    def __enter__(self) -> Bucket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def _get_small(self, url: str, what: str, missing: Exception | None = None) -> bytes:
        with request(self.session, "GET", url, what, timeout=timeouts(self.config.network), stream=True) as response:
            if missing is not None and response.status_code == 404:
                raise missing
            if response.status_code != 200:
                raise NetworkError(f"{what}: GET {url} answered {response.status_code}")
            return read_body(response, MAX_MANIFEST_BYTES, what, url)

    def manifest(self, board: str, os_version: str) -> FetchedManifest:
        """Fetch, verify and parse the manifest of one OS release."""
        url = manifest_url(self.config.torcx.manifest_url, board, os_version)
        what = f"manifest for {board} {os_version}"
        raw = self._get_small(url, what)
        if self.config.torcx.verify_signatures:
            signature = self._get_small(url + ".asc", f"signature of the {what}", missing=VerificationError(
                f"{what} ({url}) is not signed: {url}.asc does not exist; expected a detached OpenPGP signature"))
            verify_detached(raw, signature, self.config.torcx.keyring, f"{what} ({url})")
        else:
            log.warning("signature verification is off: using %s unverified", url)
        return FetchedManifest(url=url, raw=raw, packages=parse_package_list(raw, url))

    def download(self, url: str, what: str) -> Iterator[bytes]:
        """Stream a file, logging progress for long downloads."""
        with request(self.session, "GET", url, what, timeout=timeouts(self.config.network), stream=True) as response:
            if response.status_code != 200:
                raise NetworkError(f"{what}: GET {url} answered {response.status_code}")
            total = content_length(response, what, url)
            done, last = 0, time.monotonic()
            try:
                for chunk in response.iter_content(CHUNK_BYTES):
                    done += len(chunk)
                    if time.monotonic() - last > PROGRESS_EVERY_SECS:
                        last = time.monotonic()
                        log.info("%s: %d of %s bytes", what, done, total or "?")
                    yield chunk
            except requests.RequestException as err:
                raise NetworkError(f"{what}: download from {url} broke off after {done} bytes: {err}") from None
            check_complete(response, total, done, f"{what}: download from {url}")


def load_manifest(path: Path) -> PackageList:
    """A manifest saved by an earlier step (already verified)."""
    return parse_package_list(read_bytes(path, "a manifest saved by an earlier step", limit=MAX_MANIFEST_BYTES),
                              str(path))
