"""No retry storm: a new-OS flow whose runs keep failing backs off, in a real systemd.

The bucket lacks the next OS's addon for an hour, played at 1/60 of the
time (simnode/storm.py: every wait the product makes, divided alike). The
runs and the bucket requests of that hour are bounded by what the backoff
policy allows; the status says when the next try is; the first fixed
bucket answer is taken at that next try, not before, and the node's labels
follow.
"""

from __future__ import annotations

import time
from pathlib import Path

from simnode.cluster import BOARD
from simnode.storm import NEXT, failing_hour, fix_bucket, most_runs, scaled

from .flows import last_run, status, step_done
from .test_new_os_and_kubelet import store_file

SCALE = 60.0
BACKOFF_FILE = "/run/torcx-tectonic/new-os.backoff"


def test_an_hour_of_a_bucket_without_the_addon_is_a_few_runs_and_the_fix_is_taken_at_the_next_try(
        bundle: Path, tmp_path: Path) -> None:
    units = scaled(SCALE)["units"]
    bound = most_runs(SCALE)
    with failing_hour(bundle, tmp_path, scale=SCALE) as (cluster, node, hour):
        print(f"\nin one hour at 1/{SCALE:g}: {hour.runs} runs, {hour.manifest_gets} GETs of the next OS's manifest, "
              f"{hour.requests} bucket requests; pauses {[round(p, 1) for p in hour.pauses]} s (bound {bound} runs)")
        assert 2 <= hour.runs <= bound == 4  # back to back, runs of 7.5 s would be 8
        attempts = int(units["retry_attempts"])
        assert hour.manifest_gets <= bound * attempts
        delay = float(units["backoff_delay"])
        for number, pause in enumerate(hour.pauses, start=1):  # growing: at least half the doubled delay
            assert pause >= delay * 2 ** (number - 1) / 2 - 0.5, hour.pauses

        # the operator's view: when the next try is
        node.wait_for(lambda: node.exists(BACKOFF_FILE), timeout=60, what="the node to back off")
        code, document = status(node)
        run = document["flows"]["new-os"]["last_run"]
        assert (code, run["result"], run["failed_in_a_row"]) == (1, "failed", hour.runs), run
        next_try = run["next_try"]
        assert next_try > time.time()
        text = node.run("torcx-tectonic", "status", check=False).stdout
        assert f"backing off after {hour.runs} failed run(s) in a row: next try at " in text
        assert cluster.api.labels("node-1")["torcx-tectonic.io/next-boot"] == "not-ok"

        # the bucket is fixed while the node waits: nothing asks it before the next try, which takes it
        fixed = time.time()
        fix_bucket(cluster)
        node.wait_for(lambda: step_done(node, "new-os", "annotate"), timeout=next_try - time.time() + 60,
                      what="the next try to take the fixed bucket")
        manifest = f"/manifests/{BOARD}/{NEXT}/torcx_manifest.json"
        asked = [r.time for r in cluster.bucket.requests_for(manifest) if r.time > fixed and r.url_path == manifest]
        assert asked and asked[0] >= next_try - 0.5, (asked, next_try)
        assert last_run(node, "new-os")["failed_in_a_row"] == 0
        assert store_file(node, NEXT, "17.03").is_file()
        assert not node.exists(BACKOFF_FILE)
        node.wait_for(lambda: cluster.api.labels("node-1").get("torcx-tectonic.io/next-boot") == "ok", timeout=30,
                      what="the node's label to follow")
