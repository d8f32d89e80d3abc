"""``torcx-tectonic``: the operator's command.

``torcx-tectonic status`` answers "will this node boot with the Docker its
Kubernetes needs?" for the running and the next OS, and shows what that
answer rests on; ``--json`` gives the same as a stable, versioned document
(``kind: torcx-tectonic-status-v1``). Exit status: 0 when both verdicts are
ok, 1 otherwise, 2 on a usage error.

``torcx-tectonic retry FLOW`` starts a flow that backs off after failed
runs (new-os) at once, instead of at its next try. Exit status: 0 when it
was started, 1 when systemd refused, 2 on a usage error.

``torcx-tectonic rollback`` puts back the runtime version the node ran
before its last runtime change (rollback.py). Exit status: 0 when it rolled
back, 1 when there is nothing to roll back to (nothing changed) or it failed.

``torcx-tectonic mirror`` copies from a reachable bucket what nodes with no
route out need into a directory (mirror.py). Exit status: 0 when the mirror
is complete, 1 on an error or when something nodes need could not be
mirrored, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .. import config as configuration
from ..cluster.mappings import RuntimeMappings, load_mappings
from ..cluster.view import Cluster
from ..edges.inputfile import BOARD, KUBE_VERSION, OS_VERSION, Grammar, read_text
from ..errors import ConfigError, InputError, TorcxTectonicError
from ..flows import all_flows
from ..mirroring import DEFAULT_MANIFEST_PATH, Request, check_manifest_path
from ..paths import NodePaths
from ..state import FAILED, encode
from ..steps import backoff
from ..verdict import Verdict
from . import mirror, rollback
from .status import KIND, FlowStatus, Status, gather

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
    for image in status.view.images:
        out += _verdict_line(f"{image.name} image, running OS {image.current.os or '?'}", image.current)
        if image.next is not None:
            out += _verdict_line(f"{image.name} image, next OS {image.next.os}", image.next)
    out += ["", "os",
            f"  board:          {status.board or '?'}",
            f"  running:        {status.current_os or '?'}",
            f"  next:           {status.next_os or '-'} ({status.next_source})",
            "kubernetes",
            f"  version:        {status.kube_version or '?'} ({status.kube_source})",
            f"{status.runtime}",
            f"  accepted:       {', '.join(status.wanted) or '?'} ({status.mapping_source})",
            f"  running now:    {status.booted or '-'} ({status.view.booted_source})",
            f"  reset pending:  {status.reset_pending or 'no'}",
            f"  pinned:         {status.pin.version or 'no'} ({status.pin.source})",
            f"  backend:        {status.backend}"]
    for title, lines in status.view.sections:
        out += [title, *lines]
    out.append("flows (last run)")
    out += [f"  {flow.flow + ':':15} {_flow_line(flow)}" for flow in status.flows]
    out.append("path and timer units (follow OS updates, kubelet.env changes and the api-server)")
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
                    "reset_pending": status.reset_pending, "pin": status.pin.version,
                    "pin_source": status.pin.source},
        "verdict": {"current": verdict(status.current), "next": verdict(status.next)},
        **status.view.document,
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
    commands.add_parser(
        "rollback", help="put back the runtime version this node ran before its last runtime change",
        description="Select (torcx) or link (sysext) again the runtime version the node ran before its last "
                    "runtime change, if it is still kept, with the Docker data reset of a forward change; it "
                    "applies at the next boot. The next new-kubelet or new-OS run would move the node forward "
                    "again unless it is pinned.")
    _mirror_arguments(commands.add_parser(
        "mirror", help="copy what nodes with no route out need from a reachable bucket into a directory",
        description="Copy the signed manifests of the OS versions given and the addons their nodes need for the "
                    "Kubernetes versions given, verified, into DIR (laid out so that the same URL template works "
                    "against it), and print the configuration that points nodes at it. Run it again to refresh: "
                    "what is already there and right is kept."))
    args = parser.parse_args(argv)
    if args.command == "mirror":
        return mirror_command(args, parser)
    if args.command == "rollback":
        return rollback_command(paths or NodePaths())
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


def rollback_command(paths: NodePaths) -> int:
    """``torcx-tectonic rollback``: what it did on stdout; why it did not on stderr, exit 1."""
    try:
        config = configuration.load()
        done = rollback.roll_back(config, paths)
    except (TorcxTectonicError, OSError) as err:
        sys.stderr.write(f"torcx-tectonic rollback: {err}\n")
        return 1
    sys.stdout.write(rollback.render(done, config.kubernetes.node_name))
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
    manifest_path = args.manifest_path or DEFAULT_MANIFEST_PATH
    _check_arguments(parser, ("--from-addons", configuration.parse_addon_mirror, args.addon_source),
                     ("--manifest-path", check_manifest_path, manifest_path))
    base, note = mirror.served_at(root, args.served_at)
    try:
        config = _mirror_config(args.config)
        backend = mirror.mirroring(config)
        _check_arguments(parser, ("--from", backend.parse_source, args.source),
                         ("--served-at", lambda url: backend.node_configuration(url, manifest_path), base))
        config = backend.with_source(config, args.source, args.keyring)
        addon_source = args.addon_source if args.addon_source is not None else (
            "" if args.source is not None else config.torcx.addon_mirror)
        request = Request(root=root, board=args.board, os_versions=tuple(args.os_versions),
                          kubernetes=tuple(args.kubernetes), manifest_path=manifest_path, addon_source=addon_source)
        mappings = _mirror_mappings(config, args.mappings)
        sys.stdout.write(f"torcx-tectonic mirror: into {root}\n")
        summary = backend.run(config, request, mappings, lambda line: print(line, flush=True))
    except (TorcxTectonicError, OSError) as err:
        sys.stderr.write(f"torcx-tectonic mirror: {err}\n")
        return 1
    sys.stdout.write(mirror.render(summary, base, note, backend.node_configuration))
    return 0 if summary.complete else 1


def _check_arguments(parser: argparse.ArgumentParser, *checks: tuple[str, Callable[[str], object], str | None]) -> None:
    """A usage error (exit 2) naming the option for the first value its check refuses."""
    for option, check, value in checks:
        try:
            if value is not None:
                check(value)
        except (ValueError, InputError) as err:
            parser.error(f"mirror {option} {value!r}: {err}")


def _mirror_config(path: Path | None) -> configuration.Config:
    """The configuration: the file given alone, or the node's."""
    if path is None:
        return configuration.load()
    text = read_text(path, "an INI configuration file", error=ConfigError)
    return configuration.build(configuration.collect([(str(path), text)]), (path,))


def _mirror_mappings(config: configuration.Config, path: Path | None) -> RuntimeMappings:
    """The runtime mappings: the file given, else the cluster's (the ConfigMap, else the node-local file)."""
    if path is None:
        return Cluster(config).runtime_mappings()
    mappings = load_mappings(path, configuration.runtime_name(config))
    if mappings is None:
        raise ConfigError(f"{path}: missing; expected runtime mappings (--mappings)")
    return mappings
