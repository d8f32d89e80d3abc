"""The one wrapper every libexec script and the generator use.

It sets up logging, parses the few arguments, loads the configuration, runs
the step and records its facts; a known error becomes one journal line, a
failed-facts record and exit status 1 (a traceback only with
SYSTEMD_LOG_LEVEL=debug).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from . import config as configuration
from . import log as logsetup
from .errors import TorcxTectonicError
from .facts import Facts
from .steps import Context, Record

log = logging.getLogger("torcx-tectonic")

StepFunction = Callable[[Context, argparse.Namespace], Record]


def parse_args(script: str, argv: Sequence[str] | None,
               extra: Callable[[argparse.ArgumentParser], None] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=script, description=f"torcx-tectonic step {script}")
    parser.add_argument("--flow", required=True, help="the flow this step belongs to (facts go there)")
    parser.add_argument("--step", default=script, help="the step's name in its flow (for messages)")
    if extra:
        extra(parser)
    return parser.parse_args(argv)


def run_step(script: str, func: StepFunction, argv: Sequence[str] | None = None,
             extra: Callable[[argparse.ArgumentParser], None] | None = None) -> NoReturn:
    logsetup.setup()
    args = parse_args(script, argv, extra)
    facts = Facts(args.flow)
    try:
        cfg = configuration.load()
        record = func(Context(cfg, facts), args)
        facts.record(script, "ok", **record)
    except TorcxTectonicError as err:
        log.error("%s/%s failed: %s", args.flow, args.step, err)
        facts.record(script, "failed", error=str(err))
        if os.environ.get("SYSTEMD_LOG_LEVEL", "").lower() == "debug":
            raise
        sys.exit(1)
    sys.exit(0)
