"""The control API in the swarm report: per command kind over shards, state messages, faults,
as the terminal summary prints them and as Dagster metadata numbers."""

from __future__ import annotations

from iotswarm_pipelines.swarm.mqtt.types import CommandCounts, ShardResult
from iotswarm_pipelines.swarm.report import render_text, summarize


def shard(k: int, reboots: list[float], errors: int = 0) -> ShardResult:
    result = ShardResult(shard=k, devices=2, connections=2, started_at=100.0, ended_at=110.0)
    result.control = {"reboot": CommandCounts(len(reboots), len(reboots), errors, reboots)}
    result.state_transitions = {"online": 4, "offline": 2}
    result.control_faults = {"late": k}
    return result


def test_commands_add_up_over_shards_with_latency_percentiles():
    report = summarize([shard(0, [5000.0, 5100.0]), shard(1, [5200.0, 9000.0], errors=1)])
    (reboot,) = report.commands
    assert (reboot.kind, reboot.received, reboot.answered, reboot.errors) == ("reboot", 4, 4, 1)
    assert (reboot.latency_p50_ms, reboot.latency_p99_ms) == (5100.0, 9000.0)
    assert report.state_transitions == {"online": 8, "offline": 4}
    assert report.control_faults == {"late": 1}


def test_the_summary_and_metadata_show_them():
    report = summarize([shard(0, [5000.0, 5100.0])])
    text = render_text(report)
    assert (
        "command reboot: received 2, answered 2, errors 0, answer p50 5000.0 ms, p99 5100.0 ms"
        in text
    )
    assert "state messages: offline 2, online 4" in text
    numbers = report.metadata()
    assert numbers["cmd_reboot_received"] == 2 and numbers["cmd_reboot_latency_p99_ms"] == 5100.0
    assert numbers["state_online"] == 4


def test_a_run_without_commands_reports_none():
    report = summarize([ShardResult(shard=0, devices=1, connections=1)])
    assert report.commands == [] and "command " not in render_text(report)
    assert not any(k.startswith(("cmd_", "state_")) for k in report.metadata())
