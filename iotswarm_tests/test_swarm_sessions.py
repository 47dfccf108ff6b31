"""Swarm sessions: positions saved per shard, merged, and continued by a resumed run."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.swarm import sessions
from iotswarm_pipelines.swarm.jobs import swarm_job
from iotswarm_pipelines.swarm.options import SwarmConfigError
from iotswarm_pipelines.swarm.resources import MqttResource
from iotswarm_pipelines.swarm.sessions import DevicePosition

T0 = datetime(2024, 6, 1, 0, 30)


def test_shard_files_merge_newest_position_per_device(tmp_path):
    sessions.save_shard(
        "s1",
        0,
        "T",
        "loop",
        {"a": DevicePosition(T0, 3, 10.0), "b": DevicePosition(T0, 1, 10.0)},
        tmp_path,
    )
    # A later run with another shard count saved "b" from shard 1, more recently.
    sessions.save_shard(
        "s1", 1, "T", "loop", {"b": DevicePosition(T0 + timedelta(hours=1), 4, 20.0)}, tmp_path
    )
    session = sessions.load_session("s1", tmp_path)
    assert session.positions["a"] == DevicePosition(T0, 3, 10.0)
    assert session.positions["b"] == DevicePosition(T0 + timedelta(hours=1), 4, 20.0)
    assert (session.table, session.mode) == ("T", "loop")

    main = sessions.consolidate("s1", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1.json"]
    assert main == str(tmp_path / "s1.json")
    assert json.loads((tmp_path / "s1.json").read_text())["devices"]["b"]["cycles"] == 4
    assert sessions.load_session("s1", tmp_path).positions == session.positions


def test_unknown_session_is_none_and_bad_names_are_refused(tmp_path):
    assert sessions.load_session("nothing-here", tmp_path) is None
    with pytest.raises(SwarmConfigError, match="session name"):
        sessions.check_name("../etc")


def test_unreadable_session_file_is_a_clear_error(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SwarmConfigError, match=r"broken\.json is unreadable"):
        sessions.load_session("broken", tmp_path)


def _csv(tmp_path):
    lines = ['"SITE_ID","DATE_TIME","TA"']
    for site in ("ALIC1", "BALRD"):
        for k in range(6):
            lines.append(f"{site},{(T0 + timedelta(minutes=30 * k)).isoformat()},{k}")
    path = tmp_path / "history.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _run(config: dict) -> None:
    result = swarm_job.execute_in_process(
        run_config={"ops": {"plan_swarm": {"config": config}}},
        resources={"mqtt": MqttResource(), "cosmos": CosmosSource(url="sqlite://")},
    )
    assert result.success


def test_a_resumed_swarm_continues_where_the_last_run_stopped(tmp_path):
    folder = tmp_path / "sessions"
    config = {
        "source": _csv(tmp_path),
        "mode": "loop",
        "per_site": 2,
        "shards": 2,
        "max_cycles": 2,
        "sleep_time": 0,
        "dry": True,
        "swarm_name": "resume-me",
        "sessions_dir": str(folder),
    }
    _run(config)
    first = sessions.load_session("resume-me", folder).positions
    assert {p.last_time for p in first.values()} == {T0 + timedelta(minutes=30)}
    assert len(first) == 4 and {p.cycles for p in first.values()} == {2}

    _run({**config, "max_cycles": 3, "resume_session": True})
    second = sessions.load_session("resume-me", folder).positions
    assert {p.last_time for p in second.values()} == {T0 + timedelta(minutes=120)}
    assert {p.cycles for p in second.values()} == {5}

    _run({**config, "max_cycles": 1})  # not resumed: starts again from the first row
    assert {p.last_time for p in sessions.load_session("resume-me", folder).positions.values()} == {
        T0
    }


def test_resuming_with_another_mode_is_refused(tmp_path):
    folder = tmp_path / "sessions"
    sessions.save_shard("other", 0, "LEVEL1_SOILMET_30MIN", "replay", {}, folder)
    result = swarm_job.execute_in_process(
        run_config={
            "ops": {
                "plan_swarm": {
                    "config": {
                        "source": _csv(tmp_path),
                        "mode": "loop",
                        "dry": True,
                        "swarm_name": "other",
                        "resume_session": True,
                        "sessions_dir": str(folder),
                    }
                }
            }
        },
        resources={"mqtt": MqttResource(), "cosmos": CosmosSource(url="sqlite://")},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("plan_swarm")
    assert "saved for LEVEL1_SOILMET_30MIN in replay mode" in failure.user_failure_data.description
