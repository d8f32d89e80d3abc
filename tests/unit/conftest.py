"""Fixtures shared by the unit tests: real OpenPGP keys, made once per session;
a node under a temporary root and a local bucket for the step tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .helpers import SIGNED_DATA, Keys, RoutedServer, gpg_fingerprint, gpg_run, http_server

if TYPE_CHECKING:
    from .stepenv import StepEnv

# Hypothesis keeps its caches under build/ (ignored, removed by make clean), not in the work tree.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(__file__).resolve().parents[2] / "build" / "hypothesis"))


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        pytest.skip("gpg and gpgv are needed for signature tests")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    out = tmp_path_factory.mktemp("keyrings")
    fingerprints: dict[str, str] = {}
    for name in ("trusted", "other", "revoked"):
        uid = f"{name} <{name}@t.invalid>"
        gpg_run(home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        fingerprints[name] = gpg_fingerprint(home, uid)
    # The expired key lived for one day in 2020 and signed during it.
    past = ("--faked-system-time", "20200101T000000")
    gpg_run(home, *past, "--passphrase", "", "--quick-gen-key", "expired <expired@t.invalid>", "ed25519", "sign", "1d")
    fingerprints["expired"] = gpg_fingerprint(home, "expired <expired@t.invalid>")
    expired_signature = gpg_run(
        home,
        "--faked-system-time",
        "20200101T010000",
        "--armor",
        "--detach-sign",
        "--local-user",
        fingerprints["expired"],
        data=SIGNED_DATA,
    )
    revoked_signature = gpg_run(
        home, "--armor", "--detach-sign", "--local-user", fingerprints["revoked"], data=SIGNED_DATA
    )
    # gpg stores a revocation certificate per key, its armor line prefixed with ':'.
    certificate = (home / "openpgp-revocs.d" / f"{fingerprints['revoked']}.rev").read_text()
    gpg_run(home, "--import", data=certificate.replace(":-----BEGIN", "-----BEGIN").encode())

    def export(name: str, *args: str) -> Path:
        path = out / name
        path.write_bytes(gpg_run(home, *args))
        return path

    keyring = export("trusted.gpg", "--export", fingerprints["trusted"])
    armored = export("trusted.asc", "--armor", "--export", fingerprints["trusted"])
    dearmored = out / "trusted.dearmored.gpg"
    dearmored.write_bytes(gpg_run(home, "--dearmor", data=armored.read_bytes()))
    yield Keys(
        home=home,
        fingerprints=fingerprints,
        keyring=keyring,
        keyring_armored=armored,
        keyring_gpg_dearmored=dearmored,
        other_keyring=export("other.gpg", "--export", fingerprints["other"]),
        revoked_keyring=export("revoked.gpg", "--export", fingerprints["revoked"]),
        expired_keyring=export("expired.gpg", "--export", fingerprints["expired"]),
        revoked_signature=revoked_signature,
        expired_signature=expired_signature,
    )
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "all"],
        check=False,
        capture_output=True,
        env={**os.environ, "GNUPGHOME": str(home)},
    )


@pytest.fixture
def env(tmp_path: Path) -> StepEnv:
    """A node under a temporary root, for the step and runner tests (see stepenv.py)."""
    from .stepenv import StepEnv  # imported here: only the step tests need the step layer

    return StepEnv(tmp_path / "node")


@pytest.fixture
def bucket() -> Iterator[RoutedServer]:
    """A local HTTP release bucket whose routes the test fills."""
    with http_server() as server:
        yield server
