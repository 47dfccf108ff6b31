"""Issue 22, item 7: an interrupted swarm never looks like a success.

``iot-swarm`` runs as a real process against the real Mosquitto broker and records its run in a
``DAGSTER_HOME`` of the test's own (set up as ``make dev``'s); ^C (SIGINT) or SIGTERM stops the
devices. The command then exits 130 or 143, says it was interrupted, still prints and saves its
report, and the run is recorded as canceled.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import uuid
from pathlib import Path

import dagster as dg
import pytest

from iotswarm_tests.services import wait_until
from iotswarm_tests.swarm_runs import REFERENCE_CSV, iot_swarm

PROJECT_INSTANCE = Path(__file__).parents[1] / "dagster.yaml"


@pytest.mark.parametrize(
    ("shards", "signum", "status"),
    [("1", signal.SIGINT, 130), ("2", signal.SIGINT, 130), ("1", signal.SIGTERM, 143)],
)
def test_an_interrupted_swarm_exits_130_or_143_and_its_run_is_canceled(
    mqtt_broker,
    tmp_path,
    mark,
    shards,
    signum,
    status,
):
    host, port = mqtt_broker
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_INSTANCE, home)  # as `make dev`: no python_logs, so Dagster's at DEBUG
    name = f"iotswarm-int-{uuid.uuid4().hex[:8]}"
    proc = iot_swarm(
        "--shards", shards, "--source", str(REFERENCE_CSV), "--host", host, "--port", str(port),
        "--per-site", "3", "--mode", "loop", "--max-cycles", "0", "--sleep-time", "0.2",
        "--swarm-name", name, "--sessions-dir", str(tmp_path),
        mark=mark, env={"DAGSTER_HOME": str(home)},
    )  # fmt: skip
    try:
        # The shards save positions every progress interval: then devices are publishing.
        wait_until(lambda: any(tmp_path.glob(f"{name}.shard-*.json")), 120, "first session save")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert "Traceback" not in err and "DEBUG" not in err, err
    sent = int(re.search(r"sent (\d+) ", out).group(1))
    assert sent > 0 and f"interrupted by {signal.Signals(signum).name}" in out
    report = json.loads((tmp_path / f"{name}.report.json").read_text())
    assert report["sent"] == sent
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.CANCELED
