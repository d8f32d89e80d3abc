"""`make bench`: the performance figures, each beside a baseline measured in the same run.

Every figure is the median of several runs, taken next to its baseline (the
bare interpreter, ``curl`` + ``sha512sum``, or the goal's own bound) on the
same machine in the same minute, and printed in one table with the goal.
Nothing here passes or fails on a time: a slow or busy machine prints slow
figures, and a part that cannot run here says why in its row. A run of
every part also writes the table, with what each section's rows measure, to
docs/performance.md (a run of some parts only prints).

The parts, in the order they run:

- the generator, run inside a simulated node exactly as systemd runs it (the
  installed script, its shebang, the node's ``/usr/bin/python3``, a tmpfs
  output directory), with the shipped configuration and with every key set;
  beside ``python3 -I -S -c pass`` and ``import iniparse`` alone;
- the addon intake on this host: one process that downloads an addon from a
  local HTTP server, hashes it and stores it with the product's own code,
  beside ``curl -o FILE URL && sha512sum FILE`` on the same file;
- the flows on simulated nodes, the stand-ins answering at once: a whole
  bootstrap (with an OS update pending), the new-OS flow, and the new-kubelet
  flow with nothing to do (each step's process time from systemd, the flow
  from its trigger to its last step's exit); how many times the addon and
  each manifest were fetched; and a bootstrap with default settings whose
  api-server refuses connections;
- the parsers on this host: a 1 MiB kubelet.env with one long quoted value
  and 1 MiB of runtime mappings, each read from a file.
- an hour of a bucket that lacks the next OS's addon, played at 1/60 of the
  time on a simulated node (simnode/storm.py): the new-OS runs and the
  bucket requests with the backoff, beside the same hour with next to no
  pause between runs (what the path unit did before).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torcx_tectonic import config as product_config

from . import storm
from .bareroot import node_etc
from .cluster import CLUO_PREFIX, FAST_SETTINGS, Cluster, Release, build_bundle, cluster_node
from .documents import large_kubelet_env, large_mappings
from .node import Node
from .table import DOCUMENT, Bench, Row, median

PYTHON = "/usr/bin/python3"
CURRENT, NEXT = "1632.3.0", "1688.5.3"
RELEASES = [Release(CURRENT, ["1.12", "17.03", "17.06"]), Release(NEXT, ["1.12", "17.03", "17.06"])]
#: Rounds of the generator and its baselines, interleaved (each phase).
GENERATOR_ROUNDS = 60
#: Triggers of the new-kubelet flow with nothing to do.
FLOW_ROUNDS = 7
#: Intake runs per size, each beside one curl + sha512sum run.
INTAKE_RUNS = {64: 5, 512: 3}
MIB = 1 << 20
RUNS_DIR = "/var/lib/torcx-tectonic/runs"
#: What a bootstrap's settings must say for the stand-ins; the rest stays at its default.
STAND_IN_KEYS = {("torcx", "manifest_url"), ("torcx", "keyring"), ("kubernetes", "kubeconfig"),
                 ("kubernetes", "node_name"), ("network", "ca_bundle")}


def machine() -> str:
    """What the figures were taken on."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    python = subprocess.run([PYTHON, "-c", "import platform; print(platform.python_version())"],
                            capture_output=True, text=True, check=False).stdout.strip()
    systemd = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=False).stdout
    return (f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, {PYTHON} {python}, "
            f"systemd {systemd.split()[1] if systemd else '?'}, load average {load} when it began")


# --- the generator, inside a node --------------------------------------------------------------------

#: Runs inside the node on its own python3: each case once per round, in turn, with
#: posix_spawn (no shell); an output directory on /run (a tmpfs, as systemd gives).
TIMER = r'''
import json, os, shutil, sys, time
cases, rounds = json.loads(sys.argv[1]), int(sys.argv[2])
env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
times = {name: [] for name, _ in cases}
for n in range(rounds):
    for name, argv in cases:
        out = None
        if argv[-1] == "OUT":
            out = f"/run/tt-bench/{name}-{n}"
            os.makedirs(out)
            argv = [*argv[:-1], out, out, out]
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env)
        _, status = os.waitpid(pid, 0)
        times[name].append((time.perf_counter() - start) * 1000)
        if status != 0:
            sys.exit(f"{argv} exited with status {status}")
        if out is not None:
            shutil.rmtree(out)
print(json.dumps(times))
'''

GENERATOR = "/usr/lib/systemd/system-generators/torcx-tectonic-generator"
EVERY_KEY = "/etc/torcx-tectonic/conf.d/90-every-key.conf"


def every_key_configuration() -> str:
    """Every key set: the shipped defaults uncommented, with the optional ones given a value."""
    given = {"node_name": "node-1", "force_version": "v1.8.4+coreos.0", "ca_bundle": "/etc/ssl/certs/ca.pem",
             "proxy": "http://proxy.example.com:3128", "no_proxy": "10.3.0.1,.cluster.local"}
    lines = []
    for line in product_config.render_default().splitlines():
        match = re.fullmatch(r"#(\w+) = (.*)", line)
        if match:
            line = f"{match[1]} = {given.get(match[1], match[2])}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def generator_part(bench: Bench, bundle: Path) -> None:
    bench.section("generator (inside a simulated node, as systemd runs it)", """
        The generator as systemd runs it in a simulated node (the installed script and its shebang, the node's
        python3, a tmpfs output directory), with the shipped configuration, which sets nothing, and with every key
        set, which loads iniparse; beside the bare interpreter of the same round and `import iniparse` alone.""")
    with Node(bundle=bundle, os_version=CURRENT) as node:
        node.boot()
        node.write("/root/tt-bench-timer.py", TIMER)
        iniparse_dir = node.run(PYTHON, "-I", "-c", "import iniparse, os; print(os.path.dirname("
                                "os.path.dirname(iniparse.__file__)))").stdout.strip()
        alone = f"import sys; sys.path += [{iniparse_dir!r}]; import iniparse"
        cases = [("bare", [PYTHON, "-I", "-S", "-c", "pass"]), ("iniparse", [PYTHON, "-I", "-S", "-c", alone]),
                 ("generator", [GENERATOR, "OUT"])]

        def phase() -> dict[str, tuple[float, float]]:
            """Each case's median, and its median ratio to the bare interpreter of the same round
            (a round runs the three one after the other: the load of the moment weighs on all)."""
            out = node.run(PYTHON, "-I", "/root/tt-bench-timer.py", json.dumps(cases), str(GENERATOR_ROUNDS),
                           timeout=600).stdout
            times = json.loads(out)
            return {name: (median(values), median([v / b for v, b in zip(values, times["bare"])]))
                    for name, values in times.items()}

        default = phase()
        node.write(EVERY_KEY, every_key_configuration())
        full = phase()
        node.run("rm", "-f", EVERY_KEY)
    for label, figures in (("shipped configuration (all comments)", default), ("every key set", full)):
        bare = f"python3 -I -S -c pass {figures['bare'][0]:.1f} ms"
        value, ratio = figures["generator"]
        bench.add(Row(f"generator, {label}", value, "ms", bare, ratio, "≤ 3.0×", ratio <= 3.0,
                      "" if ratio <= 3.0 else f"by {ratio - 3.0:.2f}×"))
        value, ratio = figures["iniparse"]
        bench.add(Row("  beside it: import iniparse alone", value, "ms", bare, ratio, "(reference)"))


# --- the addon intake, on this host ----------------------------------------------------------------

#: One addon intake as the addon step does it (the product's bucket and store), as one process.
INTAKE = r'''
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from torcx_tectonic import log
from torcx_tectonic.torcx import store
from torcx_tectonic.torcx.bucket import Bucket
from torcx_tectonic.config import build
log.setup()
url, sha512, directory = sys.argv[2:5]
with Bucket(build({})) as bucket:
    store.install_addon(Path(directory), "docker", "bench", sha512, bucket.download(url, "bench addon"), url)
'''


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves the directory with sendfile (the server must not be what is measured)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def copyfile(self, source: Any, outputfile: Any) -> None:
        if "/slow/" in self.path:  # a slow bucket: 1 MiB every SLOW_PAUSE seconds
            while chunk := source.read(MIB):
                outputfile.write(chunk)
                time.sleep(SLOW_PAUSE)
        else:
            self.connection.sendfile(source)

    def translate_path(self, path: str) -> str:
        return super().translate_path(path.replace("/slow/", "/", 1))


#: The slow bucket's pause per MiB: a 64 MiB addon takes about 13 s.
SLOW_PAUSE = 0.2


@contextlib.contextmanager
def file_server(directory: Path) -> Iterator[str]:
    handler = lambda *args: _Quiet(*args, directory=str(directory))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def timed(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[float, float, str]:
    """Seconds from start to exit, the peak RSS in MiB and stderr of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {err.decode(errors='replace')[-300:]}")
    return seconds, usage.ru_maxrss / 1024, err.decode(errors="replace")


def intake_part(bench: Bench, bundle: Path) -> None:
    bench.section("addon intake (download + sha512 + atomic store, one process, local HTTP)", """
        One process downloads an addon from a local HTTP server, hashes it and stores it atomically with the
        product's own code, beside `curl` and `sha512sum` on the same file; its peak memory; and, while a slow
        bucket stretches a download, the longest wait for a progress line in the journal.""")
    if shutil.which("curl") is None or shutil.which("sha512sum") is None:
        raise RuntimeError("curl and sha512sum are needed for the baseline")
    sitelib = next(bundle.glob("usr/lib/python3*/*-packages"))
    with tempfile.TemporaryDirectory(prefix="tt-intake-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        (root / "srv").mkdir()
        (root / "intake.py").write_text(INTAKE)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        with file_server(root / "srv") as base:
            for mib, runs in INTAKE_RUNS.items():
                name = f"addon-{mib}.torcx.tgz"
                digest = _random_file(root / "srv" / name, mib * MIB)
                ours, theirs, rss, progress = [], [], [], []
                for run in range(runs):
                    store_dir, target = root / f"store-{run}", root / f"curl-{run}"
                    seconds, peak, err = timed([PYTHON, "-I", str(root / "intake.py"), str(sitelib),
                                                f"{base}/{name}", digest, str(store_dir)], env)
                    ours.append(seconds)
                    rss.append(peak)
                    progress += [line for line in err.splitlines() if "bench addon:" in line]
                    seconds, _, _ = timed(["sh", "-c", 'curl -sSf -o "$1" "$2" && sha512sum "$1"', "sh",
                                           str(target), f"{base}/{name}"], env)
                    theirs.append(seconds)
                    shutil.rmtree(store_dir)
                    target.unlink()
                goal = 1.0 if mib == 64 else 0.8
                ratio = median(ours) / median(theirs)
                bench.add(Row(f"intake {mib} MiB", median(ours), "s", f"curl + sha512sum {median(theirs):.2f} s",
                              ratio, f"≤ {goal:.1f}×", ratio <= goal))
                bench.add(Row(f"intake {mib} MiB peak RSS", max(rss), "MiB", "", None, "< 64 MiB", max(rss) < 64,
                              f"{len(progress)} progress lines" if progress else ""))
                if mib == 64:
                    _progress_row(bench, root, env, sitelib, f"{base}/slow/{name}", digest)
                (root / "srv" / name).unlink()


def _progress_row(bench: Bench, root: Path, env: Mapping[str, str], sitelib: Path, url: str, digest: str) -> None:
    """The intake from a slow bucket: when each progress line came, and what it says."""
    start = time.monotonic()
    proc = subprocess.Popen([PYTHON, "-I", str(root / "intake.py"), str(sitelib), url, digest, str(root / "slow")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(env))
    assert proc.stderr is not None
    arrived = [(time.monotonic(), line.strip()) for line in proc.stderr if "bench addon:" in line]
    proc.wait()
    end = time.monotonic()
    shutil.rmtree(root / "slow", ignore_errors=True)
    moments = [start, *(t for t, _ in arrived), end]
    gap = max(b - a for a, b in zip(moments, moments[1:]))
    complete = all(re.search(r": \d+ of \d+ bytes \(\d+%\), [0-9.]+ MiB/s$", line) for _, line in arrived)
    bench.add(Row(f"progress while a slow 64 MiB download lasts {end - start:.0f} s: largest gap", gap, "s", "", None,
                  "≤ 5 s", gap <= 5 and complete and proc.returncode == 0,
                  f"{len(arrived)} lines with bytes, total and rate" + ("" if complete else ", some incomplete")))


def _random_file(path: Path, size: int) -> str:
    import hashlib

    digest = hashlib.sha512()
    with path.open("wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


# --- the flows, on simulated nodes -----------------------------------------------------------------

def unit_times(node: Node, units: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Each unit's main process start and exit, on the monotonic clock (seconds)."""
    out = node.systemctl("show", "-p", "Id", "-p", "ExecMainStartTimestampMonotonic", "-p",
                         "ExecMainExitTimestampMonotonic", *units).stdout
    found: dict[str, tuple[float, float]] = {}
    for block in out.strip().split("\n\n"):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        start, end = int(values.get("ExecMainStartTimestampMonotonic", 0)), int(
            values.get("ExecMainExitTimestampMonotonic", 0))
        if start and end >= start:
            found[values["Id"]] = (start / 1e6, end / 1e6)
    return found


def run_record(node: Node, flow: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(node.read(f"{RUNS_DIR}/{flow}.json")))
    except FileNotFoundError:
        return None


def steps_of(flow: str) -> list[str]:
    found = next(f for f in product_config_flows() if f.name == flow)
    return [s.name for s in found.steps]


def product_config_flows() -> Sequence[Any]:
    from torcx_tectonic.flows import all_flows

    return all_flows(product_config.build({}))


def step_rows(bench: Bench, flow: str, per_step: Mapping[str, Sequence[float]], floor: float | None,
              note: str = "") -> None:
    """One row per step: its process time, beside the floor (an empty Python in the same sandbox)."""
    for step, values in per_step.items():
        if values:
            value = median(values)
            bench.add(Row(f"  {flow} {step}", value * 1000, "ms", _floor_label(floor),
                          None if floor is None else value / floor, note=note if len(values) > 1 else ""))


def _floor_label(floor: float | None) -> str:
    return "" if floor is None else f"floor {floor * 1000:.0f} ms"


#: The [Service] lines of a step unit that are not its sandbox.
NOT_SANDBOX = ("Type=", "ExecStart=", "SyslogIdentifier=", "TimeoutStartSec=", "Environment=", "#")


def sandbox_floor(node: Node, unit: str, runs: int = FLOW_ROUNDS) -> tuple[float, float]:
    """What a step unit costs before the step does anything: ``/usr/bin/python3 -I -c pass``
    and ``/bin/true`` in a transient unit with exactly the sandbox of ``unit`` (seconds, median)."""
    text = node.systemctl("cat", unit).stdout
    service = text.split("[Service]", 1)[1].split("\n[", 1)[0]
    properties = [f"--property={line}" for line in service.strip().splitlines()
                  if line and not line.startswith(NOT_SANDBOX)]
    found: dict[str, list[float]] = {"python": [], "true": []}
    for n in range(runs):
        for name, argv in (("python", [PYTHON, "-I", "-c", "pass"]), ("true", ["/bin/true"])):
            transient = f"tt-bench-floor-{name}-{n}.service"
            node.run("systemd-run", "--quiet", f"--unit={transient}", "--property=RemainAfterExit=yes", *properties,
                     *argv)
            node.wait_for(lambda transient=transient: bool(unit_times(node, [transient])),  # type: ignore[misc]
                          timeout=30, what=f"{transient} to exit")
            start, end = unit_times(node, [transient])[transient]
            found[name].append(end - start)
            node.systemctl("stop", transient)
    return median(found["python"]), median(found["true"])


def new_kubelet_part(bench: Bench, bundle: Path) -> None:
    bench.section("new-kubelet flow with nothing to do (trigger: kubelet.env rewritten, same version)", """
        Each step's process time as systemd records it, beside the floor: an empty `python3 -I -c pass` in a
        transient unit with exactly that step's sandbox (`/bin/true` there shows what the sandbox alone costs). The
        flow runs its lock and its steps one unit after the other, so its baseline is that many floors.""")
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp, Cluster(Path(tmp), RELEASES) as cluster:
        files = {**cluster.node_files(), **cluster.bootstrapped_files(CURRENT)}
        with Node(bundle=bundle, os_version=CURRENT, files=files) as node:
            node.boot()
            floor, empty = sandbox_floor(node, "torcx-new-kubelet-kubelet-version.service")
            steps = steps_of("new-kubelet")
            units = [f"torcx-new-kubelet-{s}.service" for s in steps]
            flow_times: list[float] = []
            per_step: dict[str, list[float]] = {s: [] for s in steps}
            downloads = len(cluster.addon_downloads())
            for n in range(FLOW_ROUNDS + 1):
                before = (run_record(node, "new-kubelet") or {}).get("id")
                trigger = time.monotonic()
                node.write("/etc/kubernetes/kubelet.env", f"# rewritten {n}\nKUBELET_IMAGE_URL=quay.io/coreos/"
                           "hyperkube\nKUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
                node.wait_for(lambda before=before: _ended(node, "new-kubelet", before), timeout=120,  # type: ignore[misc]
                              what="new-kubelet run")
                node.wait_for(lambda: set(unit_times(node, units)) == set(units) and not _active(node, units),
                              timeout=60, what="the steps to exit")
                run = run_record(node, "new-kubelet")
                assert run is not None and run["result"] == "ok", run
                times = unit_times(node, units)
                if n == 0:  # the first run after boot warms the page cache: not counted
                    time.sleep(1)
                    continue
                flow_times.append(times[units[-1]][1] - trigger)
                for step, unit in zip(steps, units):
                    per_step[step].append(times[unit][1] - times[unit][0])
                time.sleep(1.5)  # the recheck that follows each run ends; the next trigger is a new run
            assert len(cluster.addon_downloads()) == downloads, "a run with nothing to do downloaded an addon"
    bench.add(Row("the steps' sandbox, /bin/true in it", empty * 1000, "ms", note="a unit's cost before any Python"))
    bench.add(Row("the floor: python3 -I -c pass in that sandbox", floor * 1000, "ms",
                  note=f"median of {FLOW_ROUNDS}"))
    step_medians = {s: median(v) for s, v in per_step.items()}
    typical = median(list(step_medians.values()))
    slowest = max(step_medians, key=lambda s: step_medians[s])
    bench.add(Row("a step with nothing to do (median of the steps)", typical * 1000, "ms", _floor_label(floor),
                  typical / floor, "< 150 ms", typical < 0.150))
    bench.add(Row(f"the slowest of them ({slowest})", step_medians[slowest] * 1000, "ms", _floor_label(floor),
                  step_medians[slowest] / floor, "< 150 ms", step_medians[slowest] < 0.150))
    flow = median(flow_times)
    units_in_series = len(steps) + 1  # the flow's lock unit, then its steps, one after the other
    bench.add(Row("new-kubelet flow, trigger to last step's exit", flow, "s",
                  f"{units_in_series} × floor {units_in_series * floor:.2f} s", flow / (units_in_series * floor),
                  "< 0.5 s", flow < 0.5))
    step_rows(bench, "new-kubelet", per_step, floor, f"process, median of {FLOW_ROUNDS}")


def _active(node: Node, units: Sequence[str]) -> bool:
    states = node.systemctl("is-active", *units, check=False).stdout.split()
    return any(state in ("active", "activating", "deactivating") for state in states)


def _ended(node: Node, flow: str, before: str | None) -> bool:
    run = run_record(node, flow)
    return run is not None and run.get("id") != before and run.get("result") != "running"


def bootstrap_part(bench: Bench, bundle: Path) -> None:
    bench.section("bootstrap with an OS update pending, then the new-OS flow it starts (stand-ins at once)", """
        A whole bootstrap and the new-OS flow it starts, the stand-ins answering at once: each step's process time,
        and from the bucket's log how often one run fetched the same addon or an OS version's manifest.""")
    settings = {"bootstrap": {"reboot": "no"}}
    update = {"mode": "update", "new_version": NEXT, "step_seconds": 0}
    with cluster_node(bundle, RELEASES, os_version=CURRENT, settings=settings, update_engine=update) as (cluster,
                                                                                                       node):
        # the operator's label is there already: the new-OS flow's annotation goes at once
        cluster.api.update_node_metadata("node-1", set_labels={f"{CLUO_PREFIX}/before-reboot": "true"},
                                         source="operator")
        node.boot()
        start = time.monotonic()
        node.systemctl("start", "torcx-bootstrap.target", timeout=300)
        total = time.monotonic() - start
        run = run_record(node, "bootstrap")
        assert run is not None and run["result"] == "ok", run
        steps = [s["step"] for s in run["steps"]]
        times = unit_times(node, [f"torcx-bootstrap-{s}.service" for s in steps])
        floor, _ = sandbox_floor(node, "torcx-bootstrap-kubelet-env.service", runs=3)
        bench.add(Row("bootstrap, `systemctl start` to its return", total, "s", note="reboot = no"))
        step_rows(bench, "bootstrap", {s: [times[u][1] - times[u][0]] for s in steps
                                       if (u := f"torcx-bootstrap-{s}.service") in times}, floor)
        _fetch_rows(bench, cluster, "bootstrap", run)

        # Ending without a reboot, the bootstrap started the path units: the update's
        # marker is there, so the new-OS flow runs now (its addons are in place already).
        node.wait_for(lambda: _ended(node, "new-os", None), timeout=300, what="the new-OS run")
        run = run_record(node, "new-os")
        assert run is not None and run["result"] == "ok", run
        steps = [s["step"] for s in run["steps"]]
        units = [f"torcx-new-os-{s}.service" for s in steps]
        node.wait_for(lambda: set(unit_times(node, units)) == set(units), timeout=60, what="new-OS steps to exit")
        times = unit_times(node, units)
        path = node.systemctl("show", "-p", "ActiveEnterTimestampMonotonic", "torcx-new-os.path").stdout
        trigger = int(path.strip().split("=", 1)[1]) / 1e6
        bench.add(Row("new-OS flow, path unit started to last step's exit", times[units[-1]][1] - trigger, "s",
                      note="the next OS's addon already in its store"))
        step_rows(bench, "new-os", {s: [times[u][1] - times[u][0]] for s, u in zip(steps, units)}, floor)
        _fetch_rows(bench, cluster, "new-os", run)


def _fetch_rows(bench: Bench, cluster: Cluster, flow: str, run: Mapping[str, Any]) -> None:
    """How often the run fetched each addon and each OS version's manifest (from the bucket's log)."""
    during = [r for r in cluster.bucket.requests_for("/", method="GET") if run["started"] <= r.time <= run["finished"]]
    addons = [r.url_path for r in during if r.url_path.startswith("/addons/")]
    per_addon = {name: addons.count(name) for name in set(addons)}
    manifests = [r.url_path for r in during if r.url_path.startswith("/manifests/") and r.url_path.endswith(".json")]
    per_os = {v: sum(1 for m in manifests if f"/{v}/" in m) for v in (CURRENT, NEXT)}
    most = max(per_addon.values(), default=0)
    bench.add(Row(f"  {flow}: downloads of the same addon", most, "", "", None, "≤ 1 per run", most <= 1,
                  f"{len(addons)} downloads, {len(per_addon)} addons"))
    bench.add(Row(f"  {flow}: fetches of an OS version's manifest", max(per_os.values()), "", "", None,
                  "≤ 1 per run", max(per_os.values()) <= 1, ", ".join(f"{k}: {v}" for k, v in per_os.items())))


def refused_part(bench: Bench, bundle: Path) -> None:
    bench.section("api-server refusing connections, default settings (beside: the api-server up)", """
        A bootstrap whose api-server refuses connections, with the default retry budget, beside the same bootstrap
        with the api-server up: the Kubernetes step learns that no api-server answers, the later steps do not ask
        again.""")
    # The stand-ins need a few keys; everything else, the retry budget included, is the default.
    defaults = {section: {key: product_config.SETTINGS_BY_NAME[(section, key)].default for key in keys}
                for section, keys in FAST_SETTINGS.items()}
    totals: dict[bool, float] = {}
    steps: dict[bool, dict[str, float]] = {}
    for up in (True, False):
        with cluster_node(bundle, RELEASES, os_version=CURRENT, settings=defaults, apiserver_up=up,
                          update_engine={"mode": "none"}) as (_, node):
            node.boot()
            start = time.time()
            node.systemctl("start", "--no-block", "torcx-bootstrap.target")
            node.wait_exit(300)  # the bootstrap reboots: Docker changes from the vendor's
            run = run_record(node, "bootstrap")
            assert run is not None and run["result"] == "rebooting", run
            totals[up] = run["finished"] - start
            steps[up] = {s["step"]: s["finished"] - s["started"] for s in run["steps"]}
    baseline = f"api-server up {totals[True]:.2f} s"
    bench.add(Row("bootstrap, `systemctl start` to done", totals[False], "s", baseline, totals[False] / totals[True],
                  "< 15 s", totals[False] < 15, "ends in its reboot"))
    for step, what in (("kubelet-version", "learns it is refused"), ("docker-version", "asks it no more")):
        bench.add(Row(f"  of which {step} ({what})", steps[False][step], "s",
                      f"api-server up {steps[True][step]:.2f} s", steps[False][step] / steps[True][step]))


SYSEXT_ROUNDS = 40
#: In a mount namespace of its own, what systemd-sysext makes of the host: the image's
#: /usr over the make install bundle's over the host's (the bundle's scripts are run
#: from the bundle's directory, their package is found in /usr); the node's /etc
#: files over the host's; an empty /run and /var. Then the command.
SYSEXT_MERGED = r"""
set -e
image=$1 bundle=$2 etc=$3
shift 3
mount -t overlay overlay -o "lowerdir=$image/usr:$bundle/usr:/usr" /usr
mount -t overlay overlay -o "lowerdir=$etc:/etc" /etc
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var
exec "$@"
"""
STEP = "kubelet-version"
STEP_ARGS = ["--flow", "new-kubelet", "--step", "kubelet-version"]


def sysext_rows(image_tree: Path, bundle: Path, rounds: int = SYSEXT_ROUNDS) -> list[Row]:
    """The image's program beside the bare interpreter and beside the same scripts on
    the system python3 (``make install``), all in one namespace where the image is
    merged as systemd-sysext merges it: the generator, the program's bare
    interpreter and one step (the new-kubelet flow's first), interleaved round by round."""
    from sysext.build import GENERATOR, GENERATOR_DIR, LAYOUT, PROGRAM_PREFIX

    generator = f"{GENERATOR_DIR}/{GENERATOR}"
    step = f"{LAYOUT['LIBEXEC_DIR']}/{STEP}"
    cases = [("bare", [PYTHON, "-I", "-S", "-c", "pass"]),
             ("program", [f"{PROGRAM_PREFIX}/bin/python3", "-I", "-S", "-c", "pass"]),
             ("generator", [generator, "OUT"]), ("system generator", [f"{bundle}{generator}", "OUT"]),
             ("step", [step, *STEP_ARGS]), ("system step", [f"{bundle}{step}", *STEP_ARGS])]
    with tempfile.TemporaryDirectory(prefix="tt-bench-sysext-") as tmp:
        etc = node_etc(Path(tmp, "etc"), CURRENT)
        Path(tmp, "timer.py").write_text(TIMER)
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", SYSEXT_MERGED,
                              "sh", str(image_tree), str(bundle), str(etc), PYTHON, "-I", f"{tmp}/timer.py",
                              json.dumps(cases), str(rounds)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"the timer exited with {out.returncode}: {out.stderr[-300:]}")
    times = json.loads(out.stdout)

    def ratio(name: str, to: str) -> float:
        return median([v / b for v, b in zip(times[name], times[to])])

    bare = f"python3 -I -S -c pass {median(times['bare']):.1f} ms"
    generator_ratio, step_ratio = ratio("generator", "system generator"), ratio("step", "system step")
    return [
        Row("generator from the image (its own python3 and glibc)", median(times["generator"]), "ms", bare,
            ratio("generator", "bare"), "≤ 2.0×", ratio("generator", "bare") <= 2.0),
        Row("  beside it: the image's python3 -I -S -c pass", median(times["program"]), "ms", bare,
            ratio("program", "bare"), "(reference)"),
        Row("  beside it: the same generator on the system python3", median(times["system generator"]), "ms", bare,
            ratio("system generator", "bare"), "(make install)"),
        Row("  the image's generator against the system python3's", median(times["generator"]), "ms",
            f"system python3 {median(times['system generator']):.1f} ms", generator_ratio, "≤ 1.0×",
            generator_ratio <= 1.0),
        Row(f"step {STEP} from the image against the system python3's", median(times["step"]), "ms",
            f"system python3 {median(times['system step']):.1f} ms", step_ratio, "≤ 1.0×", step_ratio <= 1.0,
            f"median of {rounds}"),
    ]


#: The backoff's hour is played this many times faster (every wait the product makes, divided alike).
STORM_SCALE = 60.0


def backoff_part(bench: Bench, bundle: Path) -> None:
    bench.section(f"an hour of a bucket lacking the next OS's addon, one node, at 1/{STORM_SCALE:g} of the time", """
        A bootstrapped node whose OS update's manifest offers no Docker its Kubernetes accepts, so every new-OS run
        fails at its Docker step (five attempts, the default retries) while the update waits; every wait is divided
        by the scale, so a minute plays an hour. With the backoff, beside the same hour with next to no pause
        between runs (the path unit started a failed run again at once). The goal is the most the policy allows:
        each pause at least half its doubled delay.""")
    hours: dict[bool, storm.Hour] = {}
    for backing_off in (True, False):
        with tempfile.TemporaryDirectory(prefix="tt-bench-storm-") as tmp, \
                storm.failing_hour(bundle, Path(tmp), scale=STORM_SCALE, backoff=backing_off) as (_, _, hour):
            hours[backing_off] = hour
    bound = storm.most_runs(STORM_SCALE)
    attempts = int(storm.scaled(STORM_SCALE)["units"]["retry_attempts"])
    on, off = hours[True], hours[False]
    pauses = ", ".join(f"{p * STORM_SCALE / 60:.0f}" for p in on.pauses)
    bench.add(Row("new-OS runs in the hour", on.runs, "", f"no backoff {off.runs}", on.runs / max(off.runs, 1),
                  f"≤ {bound}", on.runs <= bound, f"pauses between them {pauses} min"))
    bench.add(Row("  GETs of the next OS's manifest", on.manifest_gets, "", f"no backoff {off.manifest_gets}",
                  on.manifest_gets / max(off.manifest_gets, 1), f"≤ {bound * attempts}",
                  on.manifest_gets <= bound * attempts))
    bench.add(Row("  bucket requests (manifests and signatures)", on.requests, "", f"no backoff {off.requests}",
                  on.requests / max(off.requests, 1)))


SYSEXT_ROUNDS = 15


def sysext_part(bench: Bench, bundle: Path) -> None:
    """The program of the system extension image (make sysext), on this host."""
    bench.section("the system extension image (make sysext): its own interpreter and C library, on this host", """
        The generator started from the image's program (its own interpreter, loader and C library), beside the
        bare interpreter and the same generator on the system python3; the image's size and the C library in it.""")
    from sysext import build as sysext_build

    with tempfile.TemporaryDirectory(prefix="torcx-tectonic-bench-sysext-") as tmp:
        image = sysext_build.build(Path(tmp))
        for row in sysext_rows(image.tree, bundle):
            bench.add(row)
        bench.add(Row("the image", image.raw.stat().st_size / 2**20, "MiB",
                      note=f"glibc {image.glibc} inside, needs Linux >= {image.kernel}"))


#: Parses of each 1 MiB document.
PARSE_ROUNDS = 5


def parse_rows() -> list[Row]:
    """How long the product takes to read a 1 MiB kubelet.env and 1 MiB
    runtime mappings from a file, in this process (seconds, median)."""
    from torcx_tectonic.cluster import mappings
    from torcx_tectonic.node import kubeletenv

    rows = []
    with tempfile.TemporaryDirectory(prefix="tt-bench-parse-") as tmp:
        for figure, text, read in (("parse 1 MiB kubelet.env", large_kubelet_env(), kubeletenv.read_env),
                                   ("parse 1 MiB runtime mappings", large_mappings(), mappings.load_mappings)):
            path = Path(tmp) / "document"
            path.write_text(text)
            times = []
            for _ in range(PARSE_ROUNDS):
                start = time.perf_counter()
                read(path)
                times.append(time.perf_counter() - start)
            value = median(times)
            rows.append(Row(figure, value, "s", goal="< 1 s", met=value < 1, note=f"median of {PARSE_ROUNDS}"))
    return rows


def parse_part(bench: Bench, _bundle: Path) -> None:
    bench.section("the parsers on 1 MiB documents, on this host",
                  """The largest kubelet.env (one long quoted value) and runtime mappings the size limits
                  accept, parsed in this process: both must stay linear in their size.""")
    for row in parse_rows():
        bench.add(row)


PARTS: dict[str, Callable[[Bench, Path], None]] = {
    "generator": generator_part, "intake": intake_part, "new-kubelet": new_kubelet_part,
    "bootstrap": bootstrap_part, "refused": refused_part, "backoff": backoff_part, "sysext": sysext_part,
    "parse": parse_part}


def main(argv: Sequence[str] = ()) -> int:
    """Every part, or those named on the command line."""
    unknown = sorted(set(argv) - set(PARTS))
    if unknown:
        sys.stderr.write(f"unknown parts {unknown}; the parts are {', '.join(PARTS)}\n")
        return 2
    bench = Bench()
    began = time.monotonic()
    where = machine()
    print(f"machine: {where}", flush=True)
    with tempfile.TemporaryDirectory(prefix="torcx-tectonic-bench-") as tmp:
        bundle = build_bundle(Path(tmp) / "bundle")
        for name, part in PARTS.items():
            if argv and name not in argv:
                continue
            print(f"measuring: {name}", flush=True)
            try:
                part(bench, bundle)
            except Exception as err:
                if os.environ.get("TORCX_TECTONIC_BENCH_DEBUG"):
                    traceback.print_exc()
                bench.failed(name, err)
    print(f"\n{bench.table()}\n")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    taken = f"`make bench` run in {time.monotonic() - began:.0f} s on {where}; load average {load} when it ended"
    print(taken)
    if not argv:
        DOCUMENT.write_text(bench.document(taken))
        print(f"written: {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
