"""Logging to the journal under the step's name.

Units run the scripts with ``SyslogIdentifier=`` set to the step, and stdout
connected to the journal; a ``<N>`` prefix (``SyslogLevelPrefix=``) carries
each line's priority. Run by hand, lines are plain. The level comes from
``$SYSTEMD_LOG_LEVEL`` like systemd's own tools.
"""

from __future__ import annotations

import logging
import os
import sys

PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO, "warning": logging.WARNING,
          "err": logging.ERROR, "error": logging.ERROR, "crit": logging.CRITICAL}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def setup(stream_to_journal: bool | None = None) -> None:
    if stream_to_journal is None:
        stream_to_journal = bool(os.environ.get("JOURNAL_STREAM"))
    handler = logging.StreamHandler(sys.stdout if stream_to_journal else sys.stderr)
    handler.setFormatter(JournalFormatter("%(message)s") if stream_to_journal else logging.Formatter(
        "%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(os.environ.get("SYSTEMD_LOG_LEVEL", "info").lower(), logging.INFO))


def kmsg(message: str, priority: int = 4, ident: str = "torcx-tectonic-generator") -> None:
    """Log from the generator: it runs before the journal, so it writes to
    /dev/kmsg, falling back to stderr."""
    line = f"<{priority}>{ident}: {message}\n"
    try:
        with open("/dev/kmsg", "w") as handle:
            handle.write(line)
    except OSError:
        sys.stderr.write(f"{ident}: {message}\n")
