"""Issue 25, item 3: a shard killed with SIGKILL, then ``--resume-session``.

``iot-swarm`` runs 4 devices in 2 shards as a real process against the real Mosquitto; every
row is checked by a subscriber of the test's own (not the swarm's verifier). The periodic session
saves are 60 s apart, so only the acknowledgement journal can say where the killed shard's
devices had got to.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.swarm import sessions
from iotswarm_pipelines.swarm.mqtt.window import QOS1_WINDOW
from iotswarm_tests.services import wait_until
from iotswarm_tests.swarm_runs import iot_swarm, marked_processes
from iotswarm_tests.test_swarm_scenarios import (
    PRECIP,
    T0,
    Subscriber,
    subscriber,  # noqa: F401
)

CYCLES = 100
MINUTE = timedelta(minutes=1)


@pytest.fixture(scope="module")
def precip_6h(tmp_path_factory) -> str:
    """Two sites of 1-minute rows for six hours: two runs of 100 rows never wrap."""
    url = f"sqlite:///{tmp_path_factory.mktemp('resume') / 'cosmos.sqlite'}"
    generate(url, start=T0, end=T0 + timedelta(hours=6), sites=["ALIC1", "BALRD"], tables=[PRECIP])
    return url


def _holding(path_prefix: Path, pids: list[int]) -> int:
    """The process that holds a file starting with ``path_prefix`` open (the shard's journal)."""
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        try:
            targets = [str(fd.readlink()) for fd in fds.iterdir()]
        except OSError:
            continue
        if any(t.startswith(str(path_prefix)) for t in targets):
            return pid
    raise AssertionError(f"no process holds {path_prefix}*")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_killed_shard_is_summarised_and_its_devices_resume_from_the_last_acknowledged_row(
    precip_6h,
    mqtt_broker,
    tmp_path,
    mark,
    subscriber: Subscriber,  # noqa: F811
):
    host, port = mqtt_broker
    name = f"iotswarm-resume-{uuid.uuid4().hex[:8]}"
    args = [
        "--shards", "2", "--source", precip_6h, "--table", PRECIP, "--host", host,
        "--port", str(port), "--per-site", "2", "--mode", "loop", "--max-cycles", str(CYCLES),
        "--sleep-time", "0.05", "--qos", "1", "--mqtt-prefix", subscriber.prefix,
        "--swarm-name", name, "--sessions-dir", str(tmp_path), "--progress-interval", "60",
    ]  # fmt: skip
    proc = iot_swarm(*args, mark=mark)
    try:
        wait_until(
            lambda: len(subscriber.rows) == 4 and min(map(len, subscriber.rows.values())) >= 30,
            120,
            "30 rows from every device",
        )
        shard_1 = _holding(tmp_path / f"{name}.shard-1.acks-", marked_processes(mark))
        with subscriber.lock:
            before = {topic: list(times) for topic, times in subscriber.rows.items()}
        os.kill(shard_1, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    # The run that lost a shard: one line naming it, the other shard's summary on stdout.
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "shard 1 died" in lines[0] and "SIGKILL" in lines[0], err
    assert "shard 1: died" in out and "counts are unknown" in out, out
    assert f"sent {2 * CYCLES} " in out, out  # shard 0's two devices, every cycle

    saved = sessions.load_session(name, tmp_path)
    assert saved is not None
    killed = {d: p for d, p in saved.positions.items() if p.cycles < CYCLES}
    assert len(killed) == 2, saved.positions  # shard 1's devices, from the journal alone
    owed = 0
    for device, position in killed.items():
        [topic] = [t for t in before if t.endswith(device)]
        arrived = {_time(t) for t in before[topic]} | {_time(t) for t in subscriber.rows[topic]}
        assert position.last_time is not None and position.sent_time is not None
        # acknowledged means the broker had it: every row up to there arrived
        acked = int((position.last_time - T0) / timedelta(minutes=1))
        assert acked >= 30 and {T0 + timedelta(minutes=k) for k in range(1, acked + 1)} <= arrived
        in_flight = int((position.sent_time - position.last_time) / timedelta(minutes=1))
        assert 0 <= in_flight <= QOS1_WINDOW
        owed += in_flight

    # The resumed run re-sends only the unacknowledged window, in order, and counts it.
    with subscriber.lock:
        first_run = {topic: len(times) for topic, times in subscriber.rows.items()}
    proc = iot_swarm(*args, "--resume-session", mark=mark)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    resent = re.search(r"re-sent (\d+) rows", out)
    assert (int(resent.group(1)) if resent else 0) == owed, out
    wait_until(lambda: subscriber.count >= sum(first_run.values()) + 4 * CYCLES, 60, "all rows")
    for device, position in killed.items():
        [topic] = [t for t in subscriber.rows if t.endswith(device)]
        resumed = [_time(t) for t in subscriber.rows[topic][first_run[topic] :]]
        assert resumed[0] == position.last_time + timedelta(minutes=1)  # after the acknowledged
        assert resumed == sorted(resumed) and len(set(resumed)) == len(resumed)  # in order
        gaps = [b - a for a, b in itertools.pairwise(resumed) if b - a != MINUTE]
        assert not gaps and len(resumed) == CYCLES, (len(resumed), gaps, position)  # contiguous
    wait_until(lambda: not marked_processes(mark), 30, "every swarm process gone")
