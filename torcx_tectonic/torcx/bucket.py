"""The release bucket: signed manifests and addon downloads.

A manifest is used only after its detached signature verified (unless the
operator turned verification off); an addon is streamed, hashed on the way
and enters a store only when its sha512 matches. A ``file://`` URL (a local
mirror) is read by source.py, with the same checks; everything else is HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from ..config import Config, require_manifest_url
from ..edges import source
from ..edges.http import check_complete, content_length, make_session, read_body, request, timeouts
from ..edges.inputfile import read_bytes
from ..edges.progress import Progress
from ..edges.signature import verify_detached
from ..errors import NetworkError, VerificationError
from .manifest import CHUNK_BYTES, PackageList, manifest_url, parse_package_list

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 8 << 20
@dataclass(frozen=True)
class FetchedManifest:
    """A verified manifest and its raw bytes (kept so later steps can use
    it without fetching again)."""

    url: str
    raw: bytes
    packages: PackageList
    #: the detached signature it verified against (empty when verification is off)
    signature: bytes = b""


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
        if source.is_file_url(url):
            return source.read_file_url(url, what, MAX_MANIFEST_BYTES, missing)
        with request(self.session, "GET", url, what, timeout=timeouts(self.config.network), stream=True) as response:
            if missing is not None and response.status_code == 404:
                raise missing
            if response.status_code != 200:
                raise NetworkError(f"{what}: GET {url} answered {response.status_code}")
            return read_body(response, MAX_MANIFEST_BYTES, what, url)

    def signed_document(self, url: str, what: str, *, verify: bool, keyring: Path) -> tuple[bytes, bytes]:
        """A small document and its detached signature (``url.asc``), verified
        unless the operator turned verification off (said at every run; the
        signature is then empty)."""
        raw = self._get_small(url, what)
        signature = b""
        if verify:
            signature = self._get_small(url + ".asc", f"signature of the {what}", missing=VerificationError(
                f"{what} ({url}) is not signed: {url}.asc does not exist; expected a detached OpenPGP signature"))
            verify_detached(raw, signature, keyring, f"{what} ({url})")
        else:
            log.warning("signature verification is off: using %s unverified", url)
        return raw, signature

    def signed(self, url: str, what: str, *, verify: bool, keyring: Path) -> bytes:
        """A small document, verified against its detached signature (``url.asc``)
        unless the operator turned verification off (said at every run)."""
        return self.signed_document(url, what, verify=verify, keyring=keyring)[0]

    def manifest(self, board: str, os_version: str) -> FetchedManifest:
        """Fetch, verify and parse the manifest of one OS release."""
        url = manifest_url(require_manifest_url(self.config.torcx), board, os_version)
        raw, signature = self.signed_document(url, f"manifest for {board} {os_version}",
                                              verify=self.config.torcx.verify_signatures,
                                              keyring=self.config.torcx.keyring)
        return FetchedManifest(url=url, raw=raw, packages=parse_package_list(raw, url), signature=signature)

    def download(self, url: str, what: str) -> Iterator[bytes]:
        """Stream a file, logging its progress while it lasts (progress.py)."""
        if source.is_file_url(url):
            yield from source.stream_file_url(url, what)
            return
        with request(self.session, "GET", url, what, timeout=timeouts(self.config.network), stream=True) as response:
            if response.status_code != 200:
                raise NetworkError(f"{what}: GET {url} answered {response.status_code}")
            total = content_length(response, what, url)
            with Progress(what, total) as progress:
                try:
                    for chunk in response.iter_content(CHUNK_BYTES):
                        progress.done += len(chunk)
                        yield chunk
                except requests.RequestException as err:
                    raise NetworkError(f"{what}: download from {url} broke off after {progress.done} bytes: "
                                       f"{err}") from None
                check_complete(response, total, progress.done, f"{what}: download from {url}")


def load_manifest(path: Path) -> PackageList:
    """A manifest saved by an earlier step (already verified)."""
    return parse_package_list(read_bytes(path, "a manifest saved by an earlier step", limit=MAX_MANIFEST_BYTES),
                              str(path))
