"""One swarm shard's live metrics, in a registry of its own (names: ``docs/metrics.md``).

The engine hands over its running totals every second or so (``observe``, on its own thread,
between loop turns) and the final ``ShardResult`` at the end (``finish``); counters move by the
difference since the last look, so nothing is counted per message and the final figures are
exactly the shard's report. Labels are per swarm, shard and phase, never per device, so a
100,000-device swarm has as many series as a 10-device one.

Acknowledged, failed and skipped messages carry the phase the shard was in when they were
counted (the engine books sends per phase, the rest only in total): a PUBACK that arrives just
after a phase boundary may be booked to the next phase.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from iotswarm_pipelines.swarm.mqtt.types import PHASES, LiveCounts, ShardResult

SWARM_JOB = "iotswarm_swarm"
"""The Pushgateway job of every swarm push; each shard pushes to its own group."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Seconds: loopback PUBACKs take about a millisecond, IoT Core tens, an outage's backlog
minutes (beyond 60 s, only ``+Inf``)."""


class LatencyHistogram(Collector):
    """A histogram observed in bulk: the engine's latencies arrive as lists once a second, and
    ``numpy`` buckets 20,000 of them in far less time than 20,000 ``Histogram.observe`` calls."""

    def __init__(self, name: str, documentation: str, labels: dict[str, str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.bounds = np.array(LATENCY_BUCKETS)
        self.counts = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)  # last: above all
        self.sum = 0.0
        self._lock = threading.Lock()  # a scrape or push reads while the engine adds

    def observe_many(self, values: Sequence[float]) -> None:
        if not values:
            return
        array = np.asarray(values, dtype=float)
        slots = np.searchsorted(self.bounds, array, side="left")  # value <= bound: that bucket
        added = np.bincount(slots, minlength=len(self.counts))
        with self._lock:
            self.counts += added
            self.sum += float(array.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=list(self.labels))
        with self._lock:
            cumulative, total = np.cumsum(self.counts), self.sum
        buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative, strict=False)]
        buckets.append(("+Inf", int(cumulative[-1])))
        family.add_metric(list(self.labels.values()), buckets, total)
        yield family


class ShardMetrics:
    """The metrics of shard ``shard`` of swarm ``swarm``, in ``self.registry``."""

    def __init__(self, swarm: str, shard: int, planned: int | None = None) -> None:
        self.grouping = {"swarm": swarm, "shard": str(shard)}
        self.registry = CollectorRegistry()
        names = ("swarm", "shard")
        by_phase = (*names, "phase")

        def gauge(name: str, doc: str, labels: Sequence[str] = names) -> Gauge:
            return Gauge(name, doc, labels, registry=self.registry)

        def counter(name: str, doc: str, labels: Sequence[str] = names) -> Counter:
            return Counter(name, doc, labels, registry=self.registry)

        p = "iotswarm_swarm_"
        self.planned = gauge(p + "messages_planned", "Messages the shard plans to send")
        self.sent = counter(p + "messages_sent", "Publishes handed to the socket", by_phase)
        self.acknowledged = counter(
            p + "messages_acknowledged", "PUBACKs (QoS 1) or written (QoS 0)", by_phase
        )
        self.failed = counter(p + "messages_failed", "Publishes that failed", by_phase)
        self.skipped = counter(p + "messages_skipped", "Cycles skipped on purpose", by_phase)
        self.unsent = gauge(p + "messages_unsent", "Planned but not sent (set at the end)")
        self.delivered = counter(p + "messages_delivered", "Verifier: delivered once")
        self.lost = counter(p + "messages_lost", "Verifier: never delivered (set at the end)")
        self.duplicated = counter(p + "messages_duplicated", "Verifier: delivered again")
        self.connections_up = gauge(p + "connections_up", "Connections connected now")
        self.connects = counter(p + "connects", "Successful connects (first and re-)")
        self.reconnects = counter(p + "reconnects", "Reconnects after a drop")
        self.connect_failures = counter(p + "connect_failures", "Refused or timed-out connects")
        self.phase = gauge(p + "phase", "1 for the current scenario phase", by_phase)
        self.control = counter(
            p + "control_commands",
            "Command-and-control API commands by outcome",
            (*names, "command", "outcome"),
        )
        self.running = gauge(p + "running", "1 while the shard runs, 0 once it has finished")
        self.last_update = gauge(p + "last_update_timestamp_seconds", "Unix time of the update")
        self.publish_latency = LatencyHistogram(
            p + "publish_latency_seconds", "Publish to PUBACK (QoS 1)", self.grouping
        )
        self.end_to_end_latency = LatencyHistogram(
            p + "end_to_end_latency_seconds", "Publish to the verifier's receipt", self.grouping
        )
        self.registry.register(self.publish_latency)
        self.registry.register(self.end_to_end_latency)
        self._seen: dict[Any, float] = {}  # each counter's total at the last look
        self._phase = "steady"
        labels = self.grouping
        if planned is not None:
            self.planned.labels(**labels).set(planned)
        self._set_phase(self._phase)
        self.running.labels(**labels).set(1)
        self.last_update.labels(**labels).set(time.time())

    def _advance(self, counter: Counter, total: float, **labels: str) -> None:
        """Move ``counter`` up to ``total`` (a counter only goes up: a smaller total is kept)."""
        key = (counter, *labels.values())
        seen = self._seen.get(key, 0)
        if total > seen:
            counter.labels(**self.grouping, **labels).inc(total - seen)
            self._seen[key] = total
        elif key not in self._seen:
            counter.labels(**self.grouping, **labels)  # the series exists from the start, at 0
            self._seen[key] = 0

    def _set_phase(self, current: str) -> None:
        self._phase = current
        for phase in PHASES:
            self.phase.labels(**self.grouping, phase=phase).set(1 if phase == current else 0)

    def _books(self, result: ShardResult, phase: str) -> None:
        """Counters from the shard's books: sends per phase as booked, the rest to ``phase``."""
        for name, count in result.phase_messages.items():
            self._advance(self.sent, count, phase=name)
        self._advance(self.sent, result.phase_messages.get(phase, 0), phase=phase)
        for counter, total in (
            (self.acknowledged, result.acknowledged),
            (self.failed, result.failed),
            (self.skipped, result.skipped),
        ):
            key = (counter, "total")  # totals so far over every phase
            delta = total - self._seen.get(key, 0)
            self._seen[key] = total
            booked = self._seen.get((counter, phase), 0)
            self._advance(counter, booked + delta, phase=phase)
        self._advance(self.connect_failures, result.connect_failures)
        self._advance(self.reconnects, sum(result.phase_reconnects.values()))
        for command, counts in getattr(result, "control", {}).items():  # with the control API
            for outcome, attribute in (
                ("received", "received"),
                ("answered", "answered"),
                ("error", "errors"),
                ("ignored", "ignored"),
            ):
                if hasattr(counts, attribute):
                    value = getattr(counts, attribute)
                    self._advance(self.control, value, command=command, outcome=outcome)

    def observe(self, live: LiveCounts) -> None:
        """Take the running figures (the engine's thread calls this every second or so)."""
        if live.phase != self._phase:
            self._set_phase(live.phase)
        self._books(live.result, live.phase)
        self.connections_up.labels(**self.grouping).set(live.connections_up)
        self._advance(self.connects, live.connects)
        if live.result.verified or live.delivered or live.duplicated:
            self._advance(self.delivered, live.delivered)
            self._advance(self.duplicated, live.duplicated)
        self.publish_latency.observe_many(live.publish_latencies)
        self.end_to_end_latency.observe_many(live.delivery_latencies)
        self.last_update.labels(**self.grouping).set(time.time())

    def finish(self, result: ShardResult | None) -> None:
        """The final figures, exactly those of the shard's report; ``running`` drops to 0
        (also without a result: the shard failed before it ran)."""
        labels = self.grouping
        self.running.labels(**labels).set(0)
        self.last_update.labels(**labels).set(time.time())
        if result is None:
            return
        self._books(result, self._phase)
        if result.verified:
            self._advance(self.delivered, result.delivered)
            self._advance(self.duplicated, result.duplicated)
            self._advance(self.lost, result.lost)
        self.unsent.labels(**labels).set(result.unsent)
        self.planned.labels(**labels).set(result.sent + result.skipped + result.unsent)
        self.connections_up.labels(**labels).set(0)
