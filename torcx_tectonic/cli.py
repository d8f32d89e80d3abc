"""The one wrapper every libexec script uses.

It sets up logging, parses the few arguments, loads the configuration, runs
the step and records its facts; a known error becomes one journal line, a
failed-facts record and exit status 1 (a traceback only with
SYSTEMD_LOG_LEVEL=debug). Network steps (``--retry``) try again with a
doubling pause before they give up, so a fixed ConfigMap, manifest or bucket
heals the node while the flow waits; systemd's own Restart= cannot do that
for a step inside a chain (its dependents fail at the first failure).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from . import config as configuration
from . import log as logsetup
from .errors import ConfigError, TorcxTectonicError
from .facts import Facts
from .steps import Context, Record

log = logging.getLogger("torcx-tectonic")

StepFunction = Callable[[Context, argparse.Namespace], Record]
Sleep = Callable[[float], None]


def parse_args(script: str, argv: Sequence[str] | None,
               extra: Callable[[argparse.ArgumentParser], None] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=script, description=f"torcx-tectonic step {script}")
    parser.add_argument("--flow", required=True, help="the flow this step belongs to (facts go there)")
    parser.add_argument("--step", default=script, help="the step's name in its flow (for messages)")
    parser.add_argument("--retry", action="store_true",
                        help="try again after a failure, as [units] retry_attempts and retry_delay say")
    if extra:
        extra(parser)
    return parser.parse_args(argv)


def attempt(func: StepFunction, ctx: Context, args: argparse.Namespace, sleep: Sleep = time.sleep) -> Record:
    """Run the step, again after each failure while attempts remain."""
    delays = configuration.retry_delays(ctx.config.units) if args.retry else []
    for number, delay in enumerate([*delays, None], start=1):
        try:
            return func(ctx, args)
        except ConfigError:
            raise
        except TorcxTectonicError as err:
            if delay is None:
                raise
            log.error("%s/%s failed (attempt %d of %d), trying again in %gs: %s", args.flow, args.step, number,
                      len(delays) + 1, delay, err)
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def run_step(script: str, func: StepFunction, argv: Sequence[str] | None = None,
             extra: Callable[[argparse.ArgumentParser], None] | None = None) -> NoReturn:
    logsetup.setup()
    args = parse_args(script, argv, extra)
    facts = Facts(args.flow)
    try:
        cfg = configuration.load()
        record = attempt(func, Context(cfg, facts), args)
        facts.record(script, "ok", **record)
    except TorcxTectonicError as err:
        log.error("%s/%s failed: %s", args.flow, args.step, err)
        facts.record(script, "failed", error=str(err))
        if os.environ.get("SYSTEMD_LOG_LEVEL", "").lower() == "debug":
            raise
        sys.exit(1)
    sys.exit(0)
