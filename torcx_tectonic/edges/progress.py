"""How a long transfer goes, said in the journal while it lasts.

An addon or a runtime image is tens or hundreds of MiB; an operator who
follows a step's journal must see it move, and see it stall. A line (bytes
so far, of how many, and the rate since the last line) comes every
PROGRESS_EVERY_SECS from a thread of its own, so a transfer that stalls says
so too, whether it comes from the bucket over HTTP or from a ``file://``
mirror on a slow disk.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

#: A progress line at least every 5 s, counted from the step's start (a second early, not late).
PROGRESS_EVERY_SECS = 4.0
MIB = 1 << 20


class Progress:
    """Logs how a transfer goes every ``every`` seconds while the block runs;
    ``done`` is what the transferring thread has received."""

    def __init__(self, what: str, total: int | None, every: float | None = None) -> None:
        self.what = what
        self.total = total
        self.every = PROGRESS_EVERY_SECS if every is None else every
        self.done = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._report, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join()

    def line(self, done: int, seconds: float, received: int) -> str:
        """One progress line: ``received`` bytes came in the last ``seconds``."""
        of = f"{self.total} bytes ({done * 100 // self.total}%)" if self.total else "? bytes"
        rate = received / seconds / MIB if seconds > 0 else 0.0
        return f"{self.what}: {done} of {of}, {rate:.1f} MiB/s"

    def _report(self) -> None:
        last_time, last_done = time.monotonic(), 0
        while not self._stopped.wait(self.every):
            now, done = time.monotonic(), self.done
            log.info("%s", self.line(done, now - last_time, done - last_done))
            last_time, last_done = now, done
