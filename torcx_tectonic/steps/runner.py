"""The one runner every libexec step script uses.

``run(entry)`` sets up logging, reads ``--flow`` and ``--step``, finds the
step in the flow table (its function and parameters come from there, not
from the command line), loads the configuration, begins or joins the flow's
run, runs the step and records its typed output; the run record says how
the step ended. A known error becomes one journal line, a failed run and
exit status 1 (a traceback only with SYSTEMD_LOG_LEVEL=debug); anything else
is a bug and is recorded as one, with its traceback in the journal.

Network steps try again with a doubling pause before they give up, so a
fixed ConfigMap, manifest or bucket heals the node while the flow waits;
systemd's own Restart= cannot do that for a step inside a chain (its
dependents fail at the first failure). The first failure already says in
the journal what is wrong and how long the step will keep trying. What
waiting cannot fix fails at once (NOT_RETRIED): a bad configuration, a file
a local (file://) mirror lacks.

A step holds its flow's run lock (lock.RunLock) while it works, so two
copies of it never interleave; it sweeps the temporary files of writers that
are gone before it begins. ``stopped`` runs after every step's unit
(``ExecStopPost=``): when the step did not succeed (killed, timed out, a
crash) it removes what the step left and records how it ended.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from .. import config as configuration
from .. import log as logsetup
from ..errors import ConfigError, LocalFileMissing, TorcxTectonicError, VerificationError
from ..flows import ENTRY_POINTS, LABEL_WAIT, Flow, Step, find_step, timeout_secs
from ..node import systemd
from ..paths import NodePaths
from ..state import FlowState, Record, RuntimeChange, RuntimeInstalled, note_change
from . import backoff, cleanup
from .context import Context
from .lock import RunLock

log = logging.getLogger("torcx-tectonic")

Sleep = Callable[[float], None]
#: Exit status of a usage error (unknown flow or step), as argparse uses.
USAGE = 2


class Stopped(BaseException):
    """systemd stopped the step (its timeout passed, or the node shuts down).
    A BaseException, so that no step's error handling mistakes it for a
    failure to retry."""


def step_function(entry: str) -> Callable[..., Record]:
    module, _, name = ENTRY_POINTS[entry].partition(":")
    function: Callable[..., Record] = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    return function


#: What a failed verification adds to the first message: it is retried (a
#: bucket that publishes a manifest and its signature one after the other, or
#: a cache that serves an old copy of one of them, heals within minutes), but
#: it is the failure least likely to heal by itself.
VERIFICATION_HINT = ("a signature or hash that does not verify rarely fixes itself: it heals when the bucket "
                     "publishes a matching manifest, signature and addon, or when [torcx] keyring trusts the key "
                     "that signed them")


#: Failures that no pause heals: only the operator can fix them.
NOT_RETRIED = (ConfigError, LocalFileMissing)


def attempt(func: Callable[..., Record], ctx: Context, sleep: Sleep = time.sleep) -> Record:
    """Run the step, again after each failure while attempts remain. Each
    failure says, in the journal and on the run record, what went wrong and
    how long the step keeps trying: the attempts left, the pauses before
    them and the unit's time limit."""
    delays = configuration.retry_delays(ctx.config.units) if ctx.step.retry else []
    for number, delay in enumerate([*delays, None], start=1):
        try:
            return func(ctx, **ctx.step.params)
        except NOT_RETRIED:
            raise
        except TorcxTectonicError as err:
            if delay is None:
                raise
            left = delays[number - 1:]
            plan = (f"{len(left)} more attempt{'s' if len(left) > 1 else ''} over the next {sum(left):g}s of pauses "
                    f"({', '.join(f'{d:g}s' for d in left)}), within the unit's limit of "
                    f"{timeout_secs(ctx.step, ctx.config)}s")
            hint = f"; {VERIFICATION_HINT}" if isinstance(err, VerificationError) else ""
            log.error("%s/%s failed (attempt %d of %d), trying again in %gs: %s; %s%s", ctx.flow.name,
                      ctx.step.name, number, len(delays) + 1, delay, err, plan, hint)
            try:
                ctx.state.attempt_failed(ctx.step.name, f"attempt {number} of {len(delays) + 1} failed: {err}; "
                                                        f"{plan}")
            except (OSError, TorcxTectonicError) as note_err:  # the note is for the operator; the retry goes on
                log.warning("cannot note the failed attempt on the run record: %s", note_err)
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


@dataclass(frozen=True)
class Arguments:
    """What a step script is told: its flow and step."""

    flow: str
    step: str


def parse_args(entry: str, argv: Sequence[str] | None) -> Arguments:
    """``--flow FLOW --step STEP``, as the generated units pass them."""
    parser = argparse.ArgumentParser(prog=entry, description=f"torcx-tectonic step {entry}: what it does and "
                                     "with which parameters is declared in the flow table (torcx_tectonic.flows)")
    parser.add_argument("--flow", required=True, help="the flow the step belongs to")
    parser.add_argument("--step", required=True, help="the step's name in its flow")
    parsed = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return Arguments(parsed.flow, parsed.step)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Stopped()


def run(entry: str, argv: Sequence[str] | None = None, paths: NodePaths | None = None) -> NoReturn:
    logsetup.setup()
    args = parse_args(entry, argv)
    try:
        config: configuration.Config | None = configuration.load()
        config_error: ConfigError | None = None
    except ConfigError as err:
        config, config_error = None, err
    found = find_step(config or configuration.build({}), args.flow, args.step)
    if found is None or found[1].entry != entry:
        sys.stderr.write(f"{entry}: flow {args.flow!r} has no step {args.step!r} run by {entry}\n")
        sys.exit(USAGE)
    flow, step = found
    node = paths or NodePaths()
    signal.signal(signal.SIGTERM, _on_sigterm)
    code = run_step(flow, step, config, config_error, node)
    sys.exit(code)


def run_lock(paths: NodePaths, flow: Flow, step: Step) -> RunLock:
    return RunLock(paths.state_dir / f"{flow.name}.lock", f"{flow.name}/{step.name}")


def waits_for_others(step: Step) -> bool:
    """A step that waits for someone else (the update operator's label, up
    to an hour) holds its run's lock only while it records: its function
    takes the node-wide flow lock itself, which a step of the same flow may
    hold while it waits for the run lock."""
    return step.timeout == LABEL_WAIT


def run_step(flow: Flow, step: Step, config: configuration.Config | None, config_error: ConfigError | None,
             paths: NodePaths) -> int:
    """Run one step within its flow's run and record how it ended; the exit status."""
    with run_lock(paths, flow, step) as lock:
        return _run_locked(flow, step, config, config_error, paths, lock)


def _run_locked(flow: Flow, step: Step, config: configuration.Config | None, config_error: ConfigError | None,
                paths: NodePaths, lock: RunLock) -> int:
    """Join the run, do the step, record how it ended: a known failure is
    one journal line and a failed run, anything else is recorded as a bug."""
    state = FlowState(paths, flow.name)
    ends_run = not flow.follows_run(step)
    try:
        _join_run(flow, step, config, paths, state)
        if config_error is not None:
            raise config_error
        assert config is not None
        with lock.released(waits_for_others(step)):
            record = attempt(step_function(step.entry), Context(config, paths, state, flow, step))
        _record_success(flow, step, state, record)
        return 0
    except TorcxTectonicError as err:
        log.error("%s/%s failed: %s", flow.name, step.name, err)
        _record_failure(config, flow, state, step, str(err), ends_run)
        if os.environ.get("SYSTEMD_LOG_LEVEL", "").lower() == "debug":
            raise
    except OSError as err:  # the node refused: a full disk, a read-only file system, permissions
        log.error("%s/%s failed: %s", flow.name, step.name, err)
        _record_failure(config, flow, state, step, str(err), ends_run)
    except Stopped:
        message = "stopped by systemd before it ended (its timeout passed, or the node shuts down)"
        log.error("%s/%s %s", flow.name, step.name, message)
        _record_failure(config, flow, state, step, message, ends_run)
    except Exception as err:
        log.exception("%s/%s failed with an internal error (a bug in torcx-tectonic)", flow.name, step.name)
        _record_failure(config, flow, state, step, f"internal error: {err!r}", ends_run)
    return 1


def _join_run(flow: Flow, step: Step, config: configuration.Config | None, paths: NodePaths,
              state: FlowState) -> None:
    """Sweep what dead writers left, then begin the flow's run (its first
    step) or continue it."""
    if config is not None:
        swept = cleanup.sweep(config, paths)
        if swept:
            log.info("removed temporary files that writers which no longer run left: %s",
                     ", ".join(str(p) for p in swept))
    if flow.begins_run(step):
        state.begin(step.name)
        if flow.backoff:
            backoff.release(paths, flow.name)
    else:
        # a step of the run started again (its flow run again while the steps
        # before it skip) continues a run that failed; a follower joins it as it is
        state.resume(step.name, reopen=not flow.follows_run(step))


def _record_success(flow: Flow, step: Step, state: FlowState, record: Record) -> None:
    """Keep the step's record (and a runtime change across boots, for a
    rollback); end the step, or reboot when the record asks for it."""
    state.save(record)
    if isinstance(record, RuntimeInstalled) and record.runtime_changed and record.version is not None:
        note_change(state.paths, RuntimeChange(runtime=record.runtime, previous=record.previous,
                                               version=record.version, changed=state.clock(), by=flow.name))
    reason = record.reboot_reason()
    if reason is None:
        state.step_succeeded(step.name, ends_run=flow.ends_run(step))
        return
    state.rebooting(step.name, reason)
    log.warning("rebooting for: %s", reason)
    # The reboot stops this unit at once. Its SIGTERM must not end the step
    # as a failure ('signal'), even in the last moments of the interpreter
    # (which restores the default action): blocked, it is dropped at exit 0.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    systemd.reboot()


def stopped(argv: Sequence[str] | None = None, paths: NodePaths | None = None,
            environ: Mapping[str, str] | None = None) -> NoReturn:
    """``step-stopped``, after every step's unit (``ExecStopPost=``): when the
    step did not succeed, remove what it left (temporary files, a GC's or a
    Docker reset's moved-aside trees) and, if its process ended without
    recording a result (killed, a crash), record how it ended. Always exits
    0: the unit's result is the step's."""
    logsetup.setup()
    args = parse_args("step-stopped", argv)
    env = os.environ if environ is None else environ
    result = env.get("SERVICE_RESULT", "")
    if result in ("", "success"):
        sys.exit(0)
    try:
        config = configuration.load()
    except ConfigError as err:  # the step itself failed on it and recorded why
        log.warning("cleaning up after %s/%s with the default paths: %s", args.flow, args.step, err)
        config = configuration.build({})
    found = find_step(config, args.flow, args.step)
    if found is None:
        sys.stderr.write(f"step-stopped: flow {args.flow!r} has no step {args.step!r}\n")
        sys.exit(USAGE)
    flow, step = found
    node = paths or NodePaths()
    try:
        with run_lock(node, flow, step):
            for path in cleanup.leftovers(config, node):
                log.warning("removed %s, which %s/%s left when it did not end", path, flow.name, step.name)
            how = ended_how(result, env.get("EXIT_CODE", ""), env.get("EXIT_STATUS", ""))
            state = FlowState(node, flow.name)
            if state.step_interrupted(step.name, how, ends_run=not flow.follows_run(step)):
                log.error("%s/%s: %s", flow.name, step.name, how)
                if flow.backoff:
                    backoff.hold(state, config.units)
    except (OSError, TorcxTectonicError) as err:
        log.error("cannot clean up after %s/%s: %s", flow.name, step.name, err)
    sys.exit(0)


def ended_how(result: str, exit_code: str, exit_status: str) -> str:
    """In words, how a step's process ended without a result, from what
    systemd tells ``ExecStopPost=`` ($SERVICE_RESULT, $EXIT_CODE, $EXIT_STATUS)."""
    if exit_code == "killed":
        how = f"its process was killed by signal {exit_status}"
    elif exit_code == "dumped":
        how = f"its process crashed (signal {exit_status}, core dumped)"
    elif exit_code == "exited":
        how = f"its process exited with status {exit_status} without recording a result"
    else:
        how = "its process ended without recording a result"
    if result == "timeout":
        return f"{how}: systemd stopped it when its time limit passed"
    if result == "oom-kill":
        return f"{how}: the kernel ran out of memory"
    return f"{how} before the step ended"


def _record_failure(config: configuration.Config | None, flow: Flow, state: FlowState, step: Step, message: str,
                    ends_run: bool) -> None:
    """Record the failure; when it ends a run of a flow that backs off, the
    next try too, before the process exits (see backoff)."""
    try:
        state.step_failed(step.name, message, ends_run=ends_run)
        if ends_run and flow.backoff:
            backoff.hold(state, (config or configuration.build({})).units)
    except (OSError, TorcxTectonicError) as err:
        log.error("cannot record the failure of %s/%s: %s", state.flow, step.name, err)
