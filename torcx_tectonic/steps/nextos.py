"""Step: the running OS and the one that boots next (optionally forcing an update).

The running OS is VERSION_ID of /usr/lib/os-release (what torcx keys its
versioned stores by); the next one is what update_engine says it applied. In
bootstrap the step can force an update first, retrying a bounded number of
times and then continuing on the running OS (docs/design.md, 'When an OS update fails'), or failing when
the operator asked for that.
"""

from __future__ import annotations

import contextlib
import logging

from ..errors import TorcxTectonicError
from ..node import osrelease, updateengine
from ..state import OsVersions
from .context import Context

log = logging.getLogger(__name__)


def os_versions(ctx: Context, *, attempt_update: bool = False, engine_optional: bool = False) -> OsVersions:
    """Find the running OS and the one that boots next. ``engine_optional``:
    an unreachable update_engine means no pending update (a bootstrap that
    was told not to update the OS must not fail on that)."""
    current = osrelease.read_os_release(ctx.paths.os_release)
    boot = ctx.config.bootstrap
    update: str | None = None
    failures: tuple[str, ...] = ()
    warning: str | None = None
    status: updateengine.Status | None = None
    if attempt_update:
        outcome, status, failures = update_with_retries(boot.os_update_attempts, boot.os_update_timeout)
        update = outcome.value
        if outcome is updateengine.Outcome.FAILED:
            failed = f"OS update failed {len(failures)} time(s): {'; '.join(failures)}"
            if boot.os_update_failure == "fail":
                raise TorcxTectonicError(failed, hint="set [bootstrap] os_update_failure=continue to go on")
            warning = (f"{failed}; continuing on the running OS {current.version}; "
                       "the new-OS flow will handle the next update")
            log.error("%s", warning)
    else:
        try:
            status = updateengine.get_status()
        except updateengine.UpdateEngineError as err:
            if not engine_optional:
                raise
            log.warning("%s; assuming no pending update", err)
    if status is not None and status.update_applied and status.pending_version is None:
        raise TorcxTectonicError(
            f"update_engine has applied an OS update but reports its version as {status.new_version!r}: "
            "cannot prepare the addons for the next OS", hint="the step is retried; a reboot also resolves it")
    pending = status.pending_version if status else None
    upcoming = pending if pending and pending != current.version else None
    if upcoming:
        osrelease.parse_os_version(upcoming, "update_engine new_version")
        log.info("running OS %s, next OS %s", current.version, upcoming)
        source = "update_engine (an update is applied and waits for a reboot)"
    else:
        log.info("running OS %s, no OS update pending", current.version)
        source = "update_engine (no update pending)" if status is not None else "none (update_engine unreachable)"
    return OsVersions(board=current.board, current=current.version, next=upcoming, next_source=source,
                      update=update, update_failures=failures, warning=warning)


def update_with_retries(attempts: int, timeout: float) -> tuple[updateengine.Outcome, updateengine.Status | None,
                                                                 tuple[str, ...]]:
    """Ask update_engine for an update up to ``attempts`` times, once it
    owns its bus name (waiting for that at most one attempt's ``timeout``)."""
    try:
        updateengine.wait_for_engine(min(timeout, updateengine.NAME_WAIT_SECS))
    except updateengine.UpdateEngineError as err:
        return updateengine.Outcome.FAILED, None, (str(err),)
    failures: list[str] = []
    for number in range(1, max(attempts, 1) + 1):
        try:
            outcome, status = updateengine.attempt_update(timeout)
        except updateengine.UpdateEngineError as err:
            failures.append(str(err))
        else:
            if outcome is not updateengine.Outcome.FAILED:
                log.info("OS update attempt %d: %s %s", number, outcome.value, status.new_version)
                return outcome, status, tuple(failures)
            failures.append(f"update_engine reported an error event (attempt {number})")
        log.warning("OS update attempt %d of %d failed: %s", number, attempts, failures[-1])
        with contextlib.suppress(updateengine.UpdateEngineError):
            updateengine.reset_status()
    return updateengine.Outcome.FAILED, None, tuple(failures)
