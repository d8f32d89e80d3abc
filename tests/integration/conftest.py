"""Integration fixtures: the bundle, installed once per session with `make install`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import build_bundle


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (boots systemd in systemd-nspawn)"
    for tool in ("systemd-nspawn", "nsenter", "gpg", "gpgv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs it)"
    return None


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    yield build_bundle(tmp_path_factory.mktemp("bundle"))
