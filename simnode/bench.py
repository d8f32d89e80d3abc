"""`make bench`: how long the generator takes, the figure that matters at boot.

The generator runs at every boot and every daemon-reload and blocks both,
so it must be fast: this runs the installed generator (on the system
python3, as systemd does) many times into fresh directories and prints the
wall-clock figures, plus which modules it imports. Figures only; nothing
here passes or fails on a time.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .cluster import build_bundle

RUNS = 30
PYTHON = "/usr/bin/python3"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="torcx-tectonic-bench-") as tmp:
        root = Path(tmp)
        bundle = build_bundle(root / "bundle")
        generator = bundle / "usr/lib/systemd/system-generators/torcx-tectonic-generator"
        sitelib = next(bundle.glob("usr/lib/python3*/*-packages"))
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(sitelib)}
        times = []
        for run in range(RUNS):
            out = root / f"out{run}"
            out.mkdir()
            start = time.perf_counter()
            subprocess.run([PYTHON, str(generator), str(out), str(out), str(out)], check=True, env=env)
            times.append((time.perf_counter() - start) * 1000)
        baseline = []
        for _ in range(RUNS):
            start = time.perf_counter()
            subprocess.run([PYTHON, "-c", "pass"], check=True, env=env)
            baseline.append((time.perf_counter() - start) * 1000)
        units = sum(1 for _ in (root / "out0").rglob("*"))
        imports = subprocess.run([PYTHON, "-X", "importtime", str(generator), str(root / "out0")],
                                 env=env, capture_output=True, text=True).stderr
        ours = [line.split("|")[-1].strip() for line in imports.splitlines() if "torcx_tectonic" in line]
        heavy = [m for m in ("requests", "yaml", "pystemd", "urllib3") if f"| {m}" in imports
                 or f"|   {m}" in imports]
    print(f"generator on {PYTHON}, {RUNS} runs, {units} files and links written per run")
    print(f"  wall time ms: median {statistics.median(times):.1f}, min {min(times):.1f}, max {max(times):.1f}")
    print(f"  bare interpreter start ms: median {statistics.median(baseline):.1f}")
    print(f"  own modules imported: {', '.join(ours)}")
    print(f"  heavy modules imported: {', '.join(heavy) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
