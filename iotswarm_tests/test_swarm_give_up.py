"""Giving up on a dead broker: the run ends by itself, non-zero, counting the unsent
messages; stderr is one line and the summary is on stdout (issue 13 item 10, issue 25 item 4).

``iot-swarm`` runs as a real process against a Mosquitto broker of the test's own, which the test
stops for good once both shards publish; every connection after that is refused.
"""

from __future__ import annotations

import re
import uuid

from iotswarm_tests.services import wait_until
from iotswarm_tests.swarm_runs import REFERENCE_CSV, iot_swarm, marked_processes


def test_giving_up_on_a_dead_broker_is_one_line_and_counts_connect_failures(
    tmp_path,
    mark,
    private_broker,
):
    name = f"iotswarm-dead-{uuid.uuid4().hex[:8]}"
    proc = iot_swarm(
        "--shards", "2", "--source", str(REFERENCE_CSV), "--port", str(private_broker.port),
        "--per-site", "4", "--mode", "loop", "--max-cycles", "200", "--sleep-time", "0.2",
        "--give-up-after", "3", "--verify", "--swarm-name", name, "--sessions-dir", str(tmp_path),
        mark=mark,
    )  # fmt: skip
    wait_until(lambda: len(list(tmp_path.glob(f"{name}.shard-*.json"))) == 2, 120, "shards")
    private_broker.stop()
    out, err = proc.communicate(timeout=180)  # a safety net: the run must end on its own
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # no Dagster records, no stack traces
    assert lines[0].startswith("iot-swarm: error: ") and "gave up" in lines[0], err
    assert f"127.0.0.1:{private_broker.port}" in lines[0], err
    assert re.search(r"planned 800 = sent \d+ \+ skipped 0 \+ unsent \d+", out), out
    failures = int(re.search(r"connect failures (\d+)", out).group(1))
    assert failures > 0, out  # the verifier's refused reconnects count too
    wait_until(lambda: not marked_processes(mark), 30, "every swarm process gone")


def test_broker_gone_for_good_ends_the_run_non_zero_counting_the_unsent(
    tmp_path,
    mark,
    private_broker,
):
    """The broker stops once both shards publish and never comes back: after give_up_after
    the run ends by itself, exit 1, the report says planned = sent + unsent."""
    name = f"iotswarm-gone-{uuid.uuid4().hex[:8]}"
    devices, cycles = 4, 200
    proc = iot_swarm(
        "--shards", "2", "--source", str(REFERENCE_CSV), "--port", str(private_broker.port),
        "--per-site", str(devices), "--mode", "loop", "--max-cycles", str(cycles),
        "--sleep-time", "0.2", "--give-up-after", "3", "--swarm-name", name,
        "--sessions-dir", str(tmp_path), mark=mark,
    )  # fmt: skip
    wait_until(lambda: len(list(tmp_path.glob(f"{name}.shard-*.json"))) == 2, 120, "shards")
    private_broker.stop()
    out, err = proc.communicate(timeout=180)  # a safety net: the run must end on its own
    assert proc.returncode == 1, err
    planned = re.search(r"planned (\d+) = sent (\d+) \+ skipped (\d+) \+ unsent (\d+)", out)
    assert planned, out
    total, sent, skipped, unsent = map(int, planned.groups())
    assert total == devices * cycles and skipped == 0
    assert sent + unsent == total and 0 < sent < total, out
    assert "gave up" in out and "give_up_after" in out, out
    assert (tmp_path / f"{name}.json").exists()  # positions saved: a resume sends no row twice
    wait_until(lambda: not marked_processes(mark), 30, "every swarm process gone")
