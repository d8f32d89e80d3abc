"""The node-wide flow lock, and each flow's run lock.

``torcx-tectonic-lock@<flow>.service`` holds an exclusive ``flock`` on
/run/torcx-tectonic/lock while its flow's steps need it (the steps require
it; it stops when unneeded). A second flow's lock unit waits for the lock
before it reports ready, so that flow's steps queue behind it: flows never
interleave, and a trigger that arrives meanwhile waits instead of being
lost.

The run lock (/run/torcx-tectonic/<flow>.lock, :class:`RunLock`) is taken by
the step process itself: two copies of a step of one flow (one started by
systemd, one by hand, or two by hand) never interleave their work and their
writes to the flow's run, which the lock unit cannot prevent for a process
it does not start.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sys

from . import log as logsetup
from .paths import LOCK_FILE

TYPE_CHECKING = False
if TYPE_CHECKING:  # the lock unit starts every flow: it loads no more than it uses
    from collections.abc import Iterator
    from typing import NoReturn

    PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)


def notify(state: str) -> None:
    """sd_notify(3), when run by systemd: one datagram to $NOTIFY_SOCKET (a
    path, or an abstract address written with a leading '@'). Every flow's
    first step waits for this lock to be ready, and pystemd's notify would
    make it import pystemd (and lxml) for one sendto."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    import socket

    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())


def _open(path: PathLike) -> int:
    """A descriptor of the lock file to ``flock`` (created, with its directory, if need be)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextlib.contextmanager
def held(path: PathLike = LOCK_FILE) -> Iterator[None]:
    """Hold the lock for a moment, waiting for the flow that has it: for a
    step that runs outside its flow's lock (the annotation, which may wait an
    hour for the operator) but must not act while another flow is half done."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class RunLock:
    """An exclusive ``flock`` on one flow's run, released by the kernel when
    its process dies, however it dies; acquired again after a release."""

    def __init__(self, path: PathLike, who: str) -> None:
        self.path = path
        self.who = who
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = _open(self.path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s waits for another process of its flow to finish with the run (%s)", self.who,
                         self.path)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def released(self, release: bool = True) -> Iterator[None]:
        """Let go of the lock for the block (when ``release``), taking it again after."""
        if release:
            self.release()
        try:
            yield
        finally:
            self.acquire()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def hold(flow: str, path: PathLike = LOCK_FILE) -> NoReturn:
    logsetup.setup()
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another flow"
        log.info("waiting for %s to finish before %s runs", holder, flow)
        notify(f"STATUS=waiting for {holder}")
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{flow}\n".encode(), 0)
    log.info("%s holds the torcx-tectonic lock", flow)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    notify(f"READY=1\nSTATUS={flow} holds the lock")
    while True:
        signal.pause()
