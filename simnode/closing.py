"""The one context-manager shape every stand-in shares: leaving the block closes it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """``with thing:`` returns the thing and always calls ``close()`` at the end,
    even when the test failed, so no server, key or container outlives it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
