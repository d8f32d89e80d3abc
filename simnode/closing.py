"""The one context-manager shape every stand-in shares: leaving the block closes it."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

#: The stand-in's own type (typing.Self is 3.11; the unit tests also run on 3.9).
C = TypeVar("C", bound="Closing")


class Closing:
    """``with thing:`` returns the thing and always calls ``close()`` at the end,
    even when the test failed, so no server, key or container outlives it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: C) -> C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
