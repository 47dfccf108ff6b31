"""The swarm report: totals over shards, percentiles and the text chart (pure, no servers)."""

from __future__ import annotations

from iotswarm_pipelines.swarm.mqtt.types import ShardResult
from iotswarm_pipelines.swarm.report import (
    delivery,
    percentile,
    render_markdown,
    sparkline,
    summarize,
)


def shard(k: int, started: float, timeline, latencies) -> ShardResult:
    sent = sum(row[1] for row in timeline)
    return ShardResult(
        shard=k, devices=10, connections=10, sent=sent, acknowledged=sent, verified=True,
        delivered=sent, started_at=started, ended_at=started + len(timeline),
        latencies_ms=latencies, timeline=timeline,
    )  # fmt: skip


def test_percentiles_use_nearest_rank():
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50, 95, 99)
    assert percentile([], 50) is None


def test_shards_are_summed_and_aligned_on_wall_clock_time():
    a = shard(0, 1000.0, [(s, 10, 10, 5.0) for s in range(10)], [5.0] * 100)
    b = shard(1, 1005.0, [(s, 20, 20, 50.0) for s in range(10)], [50.0] * 200)
    report = summarize([b, a])
    assert (report.devices, report.sent, report.delivered, report.lost) == (20, 300, 300, 0)
    assert report.seconds == 15.0 and report.msgs_per_s == 20.0
    assert report.latency_p50_ms == 50.0 and report.latency_p99_ms == 50.0
    assert len(report.rate_series) == 15
    assert (
        report.rate_series[0] == 10 and report.rate_series[7] == 30 and report.rate_series[14] == 20
    )
    assert report.latency_series[0] == 5.0 and report.latency_series[14] == 50.0
    assert report.latency_series[7] == (10 * 5.0 + 20 * 50.0) / 30


def test_markdown_has_the_numbers_and_charts():
    report = summarize([shard(0, 0.0, [(0, 5, 5, 1.0), (1, 10, 10, 2.0)], [1.0, 2.0])])
    text = render_markdown(report, "night")
    assert "| sent | 15 |" in text and "| lost | 0 |" in text
    assert "msgs/s  |" + sparkline(report.rate_series) + "|" in text
    assert sparkline([0.0, 5.0, 10.0, None]) == "▁▄█ "


def test_the_delivery_check_fails_on_qos_1_losses_only():
    assert delivery(qos=1, failed=0, lost=0)[0]
    assert delivery(qos=1, failed=0, lost=None)[0]  # unverified: acknowledged is all it knows
    assert not delivery(qos=1, failed=0, lost=3)[0]
    failed, text = delivery(qos=1, failed=2, lost=None)
    assert not failed and "2 never acknowledged" in text
    assert delivery(qos=0, failed=5, lost=5)[0]  # QoS 0 promises nothing
