"""Integration fixtures: the bundle, installed once per session with `make install`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simnode.cluster import build_bundle
from simnode.node import missing_requirements


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = missing_requirements(extra_tools=("gpg", "gpgv"))
    if reason:
        pytest.skip(reason)
    yield build_bundle(tmp_path_factory.mktemp("bundle"))
