"""``torcx-tectonic``: the operator's command.

``torcx-tectonic status`` answers "will this node boot with the Docker its
Kubernetes needs?" for the running and the next OS, and shows what that
answer rests on; ``--json`` gives the same as a stable, versioned document
(``kind: torcx-tectonic-status-v1``). Exit status: 0 when both verdicts are
ok, 1 otherwise, 2 on a usage error.

``torcx-tectonic retry FLOW`` starts a flow that backs off after failed
runs (new-os) at once, instead of at its next try. Exit status: 0 when it
was started, 1 when systemd refused, 2 on a usage error.

``torcx-tectonic mirror`` copies from a reachable bucket what nodes with no
route out need into a directory (mirror.py). Exit status: 0 when the mirror
is complete, 1 on an error or when something nodes need could not be
mirrored, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .. import config as configuration
from ..cluster.mappings import load_mappings
from ..cluster.view import runtime_mappings
from ..edges.inputfile import BOARD, KUBE_VERSION, OS_VERSION, Grammar, read_text
from ..errors import ConfigError, InputError, TorcxTectonicError
from ..flows import all_flows
from ..paths import NodePaths
from ..state import FAILED, encode
from ..steps import backoff
from . import mirror
from .status import KIND, FlowStatus, Status, Verdict, gather

USAGE = 2


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _flow_line(flow: FlowStatus) -> str:
    run = flow.run
    if run is None:
        return "never ran on this node"
    boot = "this boot" if flow.this_boot else "an earlier boot"
    if flow.interrupted:
        return f"INTERRUPTED: began {_when(run.started)} in {boot} at step {run.steps[-1].step if run.steps else '?'}" \
               " and never ended (power loss or reboot); its next trigger runs it again"
    took = f" ({run.duration:.1f}s)" if run.duration is not None else ""
    head = {"ok": "ok", "failed": "FAILED", "rebooting": "ended in a reboot", "running": "running"}[run.result]
    line = f"{head}, {_when(run.started)} → {_when(run.finished)}{took}, {boot}"
    if run.failure:
        line += f"\n      failed at {run.failed_step}: {run.failure}"
    if run.note:
        line += f"\n      {run.note}"
    if run.previous_failure and run.result in ("running", "ok"):
        line += f"\n      before it, {run.previous_failure}"
    if run.result == FAILED and run.next_try is not None and flow.this_boot:
        left = run.next_try - time.time()
        line += (f"\n      backing off after {run.failed_in_a_row} failed run(s) in a row: next try at "
                 f"{_when(run.next_try)} ({f'in {left:.0f}s' if left > 0 else 'due now'}); "
                 f"`torcx-tectonic retry {flow.flow}` tries now")
    return line


def _verdict_line(label: str, verdict: Verdict) -> list[str]:
    mark = "ok" if verdict.ok else "NOT OK"
    lines = [f"  {label}: {mark}: {verdict.reason}"]
    lines += [f"      note: {note}" for note in verdict.notes]
    return lines


def render_text(status: Status) -> str:
    """The status as an operator reads it: the verdicts first, then the facts."""
    out = [f"torcx-tectonic {__version__}: will this node boot with the {status.runtime} its Kubernetes needs? "
           f"{'yes' if status.ok else 'NO'}", ""]
    out += _verdict_line(f"running OS {status.current.os or '?'}", status.current)
    next_label = f"next OS {status.next_os}" if status.next_os else "next boot"
    out += _verdict_line(next_label, status.next)
    out += ["", "os",
            f"  board:          {status.board or '?'}",
            f"  running:        {status.current_os or '?'}",
            f"  next:           {status.next_os or '-'} ({status.next_source})",
            "kubernetes",
            f"  version:        {status.kube_version or '?'} ({status.kube_source})",
            f"{status.runtime}",
            f"  accepted:       {', '.join(status.wanted) or '?'} ({status.mapping_source})",
            f"  running now:    {status.booted or 'unknown (torcx left no /run/metadata/torcx)'}",
            f"  reset pending:  {status.reset_pending or 'no'}",
            f"  backend:        {status.backend}",
            "profiles",
            f"  next:           {status.next_profile} ({status.next_profile_source})"]
    for kind in ("user", "vendor"):
        for name, images in sorted(status.profiles.get(kind, {}).items()):
            out.append(f"  {kind + ' ' + name + ':':15} {', '.join(images) or '(no images)'}")
    out.append("stores")
    for item in status.stores:
        label = f"{item.kind}{' ' + item.os if item.os else ''}"
        if not item.addons:
            out.append(f"  {label + ':':15} {item.path} (no addons)")
        for addon in item.addons:
            state = f", {addon.hash}" if addon.hash else ""
            out.append(f"  {label + ':':15} {addon.name}:{addon.reference} ({addon.size} bytes{state}) {addon.path}")
    out.append("flows (last run)")
    out += [f"  {flow.flow + ':':15} {_flow_line(flow)}" for flow in status.flows]
    out.append("path units (follow OS updates and kubelet.env changes)")
    out += [f"  {unit + ':':15} {state}" for unit, state in status.path_units.items()]
    if status.problems:
        out.append("problems")
        out += [f"  {problem}" for problem in status.problems]
    return "\n".join(out) + "\n"


def document(status: Status) -> dict[str, Any]:
    """The status as a stable, versioned document."""
    def verdict(value: Verdict) -> dict[str, Any]:
        return {"os": value.os, "ok": value.ok, "runtime_version": value.runtime_version, "reason": value.reason,
                "notes": list(value.notes)}

    return {
        "kind": KIND,
        "ok": status.ok,
        "os": {"board": status.board, "current": status.current_os, "next": status.next_os,
               "next_source": status.next_source},
        "kubernetes": {"version": status.kube_version, "source": status.kube_source},
        "runtime": {"name": status.runtime, "backend": status.backend, "wanted": list(status.wanted),
                    "mapping_source": status.mapping_source, "booted": status.booted,
                    "reset_pending": status.reset_pending},
        "verdict": {"current": verdict(status.current), "next": verdict(status.next)},
        "profiles": {"next": status.next_profile, "next_source": status.next_profile_source,
                     **{kind: {k: list(v) for k, v in found.items()} for kind, found in status.profiles.items()}},
        "stores": [dataclasses.asdict(item) for item in status.stores],
        "flows": {flow.flow: {"this_boot": flow.this_boot, "interrupted": flow.interrupted,
                              "last_run": encode(flow.run) if flow.run else None} for flow in status.flows},
        "path_units": status.path_units,
        "problems": list(status.problems),
    }


def main(argv: Sequence[str] | None = None, paths: NodePaths | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torcx-tectonic", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"torcx-tectonic {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status_parser = commands.add_parser("status", help="will this node boot with the Docker its Kubernetes needs?")
    status_parser.add_argument("--json", action="store_true", help="print a torcx-tectonic-status-v1 document")
    retry_parser = commands.add_parser("retry", help="start a flow that backs off after failed runs now")
    retry_parser.add_argument("flow", choices=[f.name for f in all_flows(configuration.build({})) if f.backoff],
                              help="the flow to start (its backoff ends)")
    _mirror_arguments(commands.add_parser(
        "mirror", help="copy what nodes with no route out need from a reachable bucket into a directory",
        description="Copy the signed manifests of the OS versions given and the addons their nodes need for the "
                    "Kubernetes versions given, verified, into DIR (laid out so that the same URL template works "
                    "against it), and print the configuration that points nodes at it. Run it again to refresh: "
                    "what is already there and right is kept."))
    args = parser.parse_args(argv)
    if args.command == "mirror":
        return mirror_command(args, parser)
    try:
        config = configuration.load()
    except ConfigError as err:
        sys.stderr.write(f"torcx-tectonic: {err}; going on with the default configuration\n")
        config = configuration.build({})
    if args.command == "retry":
        return retry_command(config, args.flow, paths or NodePaths())
    status = gather(config, paths)
    if args.json:
        sys.stdout.write(json.dumps(document(status), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_text(status))
    return 0 if status.ok else 1


def retry_command(config: configuration.Config, name: str, paths: NodePaths) -> int:
    """``torcx-tectonic retry FLOW``: end the flow's backoff and start it now."""
    flow = next(f for f in all_flows(config) if f.name == name)
    try:
        was = backoff.retry_now(flow, paths)
    except (OSError, TorcxTectonicError) as err:  # not root, no bus
        sys.stderr.write(f"torcx-tectonic retry: {err}\n")
        return 1
    sys.stdout.write(f"torcx-tectonic retry: started {backoff.start_unit(flow)}"
                     f"{' (its backoff ended)' if was else ' (it was not backing off)'}; "
                     f"`journalctl -u '{flow.unit_prefix}-*'` follows it\n")
    return 0


def _grammar_argument(rule: Grammar, what: str) -> Any:
    def parse(value: str) -> str:
        if not rule.matches(value):
            raise argparse.ArgumentTypeError(f"{what} {value!r} is not allowed; expected {rule.expected}")
        return value

    return parse


def _mirror_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--to", required=True, type=Path, metavar="DIR", help="the mirror directory (created if needed)")
    sub.add_argument("--os-version", action="append", default=[], dest="os_versions", metavar="VERSION",
                     type=_grammar_argument(OS_VERSION, "OS version"),
                     help="an OS version whose nodes use the mirror, like 3760.2.0 (repeat for more; the torcx "
                          "backend needs at least one: its manifests are per OS release)")
    sub.add_argument("--kubernetes", action="append", required=True, metavar="VERSION",
                     type=_grammar_argument(KUBE_VERSION, "Kubernetes version"),
                     help="a Kubernetes minor the nodes run, like 1.9 (repeat for more)")
    sub.add_argument("--board", default="amd64-usr", type=_grammar_argument(BOARD, "board"),
                     help="the board of the nodes (default: amd64-usr)")
    sub.add_argument("--from", dest="source", metavar="TEMPLATE",
                     help="the bucket's manifest URL template, with {{.Board}} and {{.OSVersion}} (default: "
                          "[torcx] manifest_url); with [runtime] backend = sysext, the images' URL template with "
                          "{{.Name}}, {{.Version}} and {{.Arch}} (default: [sysext] images_url)")
    sub.add_argument("--from-addons", dest="addon_source", metavar="URL",
                     help="take the addons from this addon mirror instead of the manifests' URLs (default: [torcx] "
                          "addon_mirror when --from is not given)")
    sub.add_argument("--mappings", type=Path, metavar="FILE",
                     help="runtime mappings (kind: VersionManifestV1) to look the Kubernetes versions up in "
                          "(default: the cluster's ConfigMap, else [kubernetes] runtime_mappings)")
    sub.add_argument("--keyring", type=Path, metavar="FILE",
                     help="the OpenPGP keyring the manifests must verify against (default: [torcx] keyring)")
    sub.add_argument("--config", type=Path, metavar="FILE",
                     help="read this configuration file alone (default: /etc/torcx-tectonic/torcx-tectonic.conf "
                          "and its conf.d)")
    sub.add_argument("--manifest-path", default=None, metavar="TEMPLATE",
                     help="where the manifests go below DIR (default: "
                          "manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json)")
    sub.add_argument("--served-at", metavar="URL",
                     help="where nodes see DIR, e.g. file:///srv/mirror or https://mirror.example/torcx, for the "
                          "configuration printed at the end (default: DIR itself, as a file:// URL)")


def mirror_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``torcx-tectonic mirror``: usage errors exit 2, other errors 1 with
    one line; the summary and the nodes' configuration go to stdout."""
    root = args.to.absolute()
    manifest_path = args.manifest_path or mirror.DEFAULT_MANIFEST_PATH
    for option, check, value in (("--from-addons", configuration.parse_addon_mirror, args.addon_source),
                                 ("--manifest-path", mirror.check_manifest_path, manifest_path)):
        try:
            if value is not None:
                check(value)
        except (ValueError, InputError) as err:
            parser.error(f"mirror {option} {value!r}: {err}")
    base, note = mirror.served_at(root, args.served_at)
    try:
        if base is not None:
            mirror.node_configuration(base, manifest_path)
    except ValueError as err:
        parser.error(f"mirror --served-at {base!r}: {err}")
    try:
        if args.config is not None:
            text = read_text(args.config, "an INI configuration file", error=ConfigError)
            config = configuration.build(configuration.collect([(str(args.config), text)]), (args.config,))
        else:
            config = configuration.load()
        sysext_backend = config.runtime.backend == "sysext"
        try:
            if args.source is not None:
                (configuration.parse_image_url if sysext_backend else configuration.parse_manifest_url)(args.source)
        except ValueError as err:
            parser.error(f"mirror --from {args.source!r}: {err}")
        if sysext_backend:  # --from and --keyring are the images' then
            config = config.replacing(sysext=config.sysext.replacing(
                images_url=args.source or config.sysext.images_url, keyring=args.keyring or config.sysext.keyring))
        else:
            config = config.replacing(torcx=config.torcx.replacing(
                manifest_url=args.source or configuration.require_manifest_url(config.torcx),
                keyring=args.keyring or config.torcx.keyring))
        addon_source = args.addon_source if args.addon_source is not None else (
            "" if args.source is not None else config.torcx.addon_mirror)
        request = mirror.Request(root=root, board=args.board, os_versions=tuple(args.os_versions),
                                 kubernetes=tuple(args.kubernetes), manifest_path=manifest_path,
                                 addon_source=addon_source)
        if args.mappings is not None:
            mappings = load_mappings(args.mappings, configuration.runtime_name(config))
            if mappings is None:
                raise ConfigError(f"{args.mappings}: missing; expected runtime mappings (--mappings)")
        else:
            mappings = runtime_mappings(config)
        sys.stdout.write(f"torcx-tectonic mirror: into {root}\n")
        summary = mirror.run(config, request, mappings, lambda line: print(line, flush=True))
    except TorcxTectonicError as err:
        sys.stderr.write(f"torcx-tectonic mirror: {err}\n")
        return 1
    except OSError as err:
        sys.stderr.write(f"torcx-tectonic mirror: {err}\n")
        return 1
    sys.stdout.write(mirror.render(summary, base, note))
    return 0 if summary.complete else 1
