"""One swarm's report from its shards' results: totals, latency percentiles and a text chart.

Pure functions over plain data, so the Dagster report step, the CLI and tests share them.
Shard timelines are aligned on wall-clock time (each shard started at its own moment) before
they are bucketed for the chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from iotswarm_pipelines.swarm.mqtt.types import PHASES, phase_of

BARS = " ▁▂▃▄▅▆▇█"
CHART_BUCKETS = 40


COUNTS = (
    "devices",
    "connections",
    "sent",
    "acknowledged",
    "failed",
    "skipped",
    "delivered",
    "lost",
    "duplicated",
    "connect_failures",
    "unsent",
    "resent",
)
"""The counters a report adds up over its shards and shows as numeric run metadata."""

LATENCIES = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")

VERIFIED_COUNTS = frozenset({"delivered", "lost", "duplicated"})
"""The counters only the verifier (a subscriber on the broker) can know."""


@dataclass
class PhaseReport:
    """One scenario phase over all shards (from the first shard entering it to the last
    leaving it); latencies are those of messages that arrived during it."""

    name: str
    seconds: float
    messages: int
    reconnects: int
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


@dataclass
class CommandReport:
    """One command kind of the control API over all shards (see ``swarm.control``): commands
    received, answered (their last message published), answered with an error, and the answer
    latency from receipt to that last message."""

    kind: str
    received: int = 0
    answered: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None


@dataclass
class SwarmReport:
    devices: int = 0
    connections: int = 0
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    skipped: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    connect_failures: int = 0
    unsent: int = 0
    gave_up: bool = False  # a shard ended because the broker stayed unreachable
    interrupted: str = ""  # what stopped the swarm before its schedule's end (SIGINT, ...)
    resent: int = 0  # rows re-sent on resuming (unacknowledged when an earlier run died)
    dead_shards: dict[int, str] = field(default_factory=dict)  # shard -> how it died
    verified: bool = False
    seconds: float = 0.0
    msgs_per_s: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    rate_series: list[float] = field(default_factory=list)
    latency_series: list[float | None] = field(default_factory=list)
    bucket_seconds: float = 1.0
    errors: list[str] = field(default_factory=list)
    phases: list[PhaseReport] = field(default_factory=list)  # empty without a scenario
    backlog_messages: int = 0
    backlog_drain_s: float | None = None  # first device back online to the last backlog ack
    commands: list[CommandReport] = field(default_factory=list)  # control API, by kind
    state_transitions: dict[str, int] = field(default_factory=dict)  # state/ messages by state
    control_faults: dict[str, int] = field(default_factory=dict)  # ignored, late, download_failed

    @property
    def planned(self) -> int:
        """Messages the devices were to make: each was sent, skipped on purpose, or not sent."""
        return self.sent + self.skipped + self.unsent

    def metadata(self) -> dict[str, float | int]:
        """Numbers for Dagster run metadata (the UI plots numeric metadata over runs).

        Delivery counts and latencies only when the run was verified: an unverified run knows
        neither, and a 0 in the plot would read as "nothing lost".
        """
        numbers: dict[str, float | int] = {
            k: getattr(self, k) for k in COUNTS if self.verified or k not in VERIFIED_COUNTS
        }
        numbers["planned"] = self.planned
        numbers["seconds"] = round(self.seconds, 2)
        numbers["msgs_per_s"] = round(self.msgs_per_s, 2)
        for name in LATENCIES:
            value = getattr(self, name)
            if value is not None:
                numbers[name] = round(value, 2)
        for phase in self.phases:
            key = phase.name.replace("-", "_")
            numbers[f"{key}_messages"] = phase.messages
            numbers[f"{key}_msgs_per_s"] = round(phase.msgs_per_s, 2)
            numbers[f"{key}_reconnects"] = phase.reconnects
            for name in LATENCIES if self.verified else ():
                value = getattr(phase, name)
                if value is not None:
                    numbers[f"{key}_{name}"] = round(value, 2)
        if self.phases and self.backlog_messages:
            numbers["backlog_messages"] = self.backlog_messages
        if self.backlog_drain_s is not None:
            numbers["backlog_drain_s"] = round(self.backlog_drain_s, 3)
        numbers.update(self._control_metadata())
        return numbers

    def _control_metadata(self) -> dict[str, float | int]:
        numbers: dict[str, float | int] = {}
        for command in self.commands:
            key = f"cmd_{command.kind}"
            numbers[f"{key}_received"] = command.received
            numbers[f"{key}_answered"] = command.answered
            numbers[f"{key}_errors"] = command.errors
            for name in ("latency_p50_ms", "latency_p99_ms"):
                value = getattr(command, name)
                if value is not None:
                    numbers[f"{key}_{name}"] = round(value, 2)
        for state, count in sorted(self.state_transitions.items()):
            numbers[f"state_{state}"] = count
        for fault, count in sorted(self.control_faults.items()):
            numbers[f"control_fault_{fault}"] = count
        return numbers


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _windows(result: Any) -> list[tuple[str, float, float]]:
    """The shard's phases as (name, start, end) in wall-clock time, from its marks."""
    marks = result.phase_marks
    ramped = "joined" in marks or "ramp" in result.phase_messages
    seen: set[str] = set()
    name, start = phase_of(seen, ramped), result.started_at
    windows = []
    for mark, at in sorted(marks.items(), key=lambda item: item[1]):
        seen.add(mark)
        following = phase_of(seen, ramped and "joined" not in seen)
        if following != name:
            windows.append((name, start, at))
            name, start = following, at
    windows.append((name, start, max(result.ended_at, start)))
    return windows


def _phases(results: Sequence[Any]) -> list[PhaseReport]:
    spans: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    for result in results:
        windows = _windows(result)
        for name, start, end in windows:
            span = spans.setdefault(name, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
        for latency, at in zip(result.latencies_ms, result.latency_times, strict=False):
            name = next((n for n, start, end in windows if start <= at < end), windows[-1][0])
            latencies.setdefault(name, []).append(latency)
    if set(spans) <= {"steady"}:
        return []  # no scenario: the totals say it all
    phases = []
    for name in PHASES:
        if name not in spans:
            continue
        values = latencies.get(name, [])
        phases.append(
            PhaseReport(
                name=name,
                seconds=spans[name][1] - spans[name][0],
                messages=sum(r.phase_messages.get(name, 0) for r in results),
                reconnects=sum(r.phase_reconnects.get(name, 0) for r in results),
                latency_p50_ms=percentile(values, 50),
                latency_p95_ms=percentile(values, 95),
                latency_p99_ms=percentile(values, 99),
            )
        )
    return phases


def _drain_seconds(results: Sequence[Any]) -> float | None:
    """From the first device back online to the last backlog acknowledgement, over shards;
    None without an outage, or when a shard never drained its backlog."""
    back = [r.phase_marks["outage_end"] for r in results if "outage_end" in r.phase_marks]
    if not back:
        return None
    drained = [r.phase_marks.get("drained") for r in results if "outage_end" in r.phase_marks]
    if any(d is None for d in drained):
        return None
    return max(d for d in drained if d is not None) - min(back)


def _series(results: Sequence[Any], start: float, seconds: float) -> tuple:
    buckets = max(1, min(CHART_BUCKETS, math.ceil(seconds)))
    width = max(seconds, 1e-9) / buckets
    sent = [0] * buckets
    weighted = [0.0] * buckets
    delivered = [0] * buckets
    for result in results:
        offset = result.started_at - start
        for second, n_sent, n_delivered, mean_ms in result.timeline:
            k = min(buckets - 1, max(0, int((offset + second) / width)))
            sent[k] += n_sent
            if n_delivered and mean_ms is not None and not math.isnan(mean_ms):
                delivered[k] += n_delivered
                weighted[k] += n_delivered * mean_ms
    rates = [n / width for n in sent]
    latencies = [w / d if d else None for w, d in zip(weighted, delivered, strict=True)]
    return rates, latencies, width


def summarize(results: Sequence[Any]) -> SwarmReport:
    """Totals over the shards' ``ShardResult``s."""
    report = SwarmReport()
    if not results:
        return report
    for name in COUNTS:
        setattr(report, name, sum(getattr(r, name) for r in results))
    report.verified = all(r.verified for r in results)
    report.gave_up = any(r.gave_up for r in results)
    report.interrupted = next((r.interrupted for r in results if r.interrupted), "")
    start = min(r.started_at for r in results)
    report.seconds = max(max(r.ended_at for r in results) - start, 0.0)
    report.msgs_per_s = report.sent / report.seconds if report.seconds > 0 else 0.0
    latencies = [x for r in results for x in r.latencies_ms]
    report.latency_p50_ms = percentile(latencies, 50)
    report.latency_p95_ms = percentile(latencies, 95)
    report.latency_p99_ms = percentile(latencies, 99)
    report.rate_series, report.latency_series, report.bucket_seconds = _series(
        results, start, report.seconds
    )
    report.errors = sorted({e for r in results for e in r.errors})[:20]
    report.phases = _phases(results)
    report.backlog_messages = sum(r.backlog_messages for r in results)
    report.backlog_drain_s = _drain_seconds(results)
    report.commands = _commands(results)
    report.state_transitions = _added(getattr(r, "state_transitions", {}) for r in results)
    report.control_faults = _added(getattr(r, "control_faults", {}) for r in results)
    return report


def _added(counts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for each in counts:
        for key, value in each.items():
            total[key] = total.get(key, 0) + value
    return total


def _commands(results: Sequence[Any]) -> list[CommandReport]:
    """The control API's counts by command kind, over the shards, in name order."""
    kinds = sorted({kind for r in results for kind in getattr(r, "control", {})})
    reports = []
    for kind in kinds:
        counts = [r.control[kind] for r in results if kind in getattr(r, "control", {})]
        latencies = [x for c in counts for x in c.latencies_ms]
        reports.append(
            CommandReport(
                kind,
                received=sum(c.received for c in counts),
                answered=sum(c.answered for c in counts),
                errors=sum(c.errors for c in counts),
                latency_p50_ms=percentile(latencies, 50),
                latency_p99_ms=percentile(latencies, 99),
            )
        )
    return reports


def dead_shards_cause(report: SwarmReport) -> str:
    """One line naming the shards that died, for a swarm that lost some."""
    dead = ", ".join(f"shard {k} {how}" for k, how in sorted(report.dead_shards.items()))
    return f"{dead}: its devices' counts are unknown; resume them with --resume-session"


def gave_up_cause(report: SwarmReport) -> str:
    """One line for a swarm that gave up on its broker: the give-up, and the last reason a
    connection failed (refused, unreachable, …) when the errors name one."""
    gave_up = next((e for e in report.errors if "gave up" in e), "the broker stayed unreachable")
    broker = gave_up.split(": ", 1)[0]
    reasons = [
        e.split(": ", 1)[1] for e in report.errors if e.startswith(f"{broker}: ") and e != gave_up
    ]
    return gave_up + (f" (last: {reasons[-1]})" if reasons else "")


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value, scaled to the largest; gaps (no data) are blank."""
    known = [v for v in values if v is not None]
    top = max(known, default=0.0)
    if top <= 0:
        return "".join(" " if v is None else BARS[1] for v in values)
    return "".join(
        " " if v is None else BARS[max(1, round(v / top * (len(BARS) - 1)))] for v in values
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def render_text(report: SwarmReport, title: str = "swarm") -> str:
    """The report as the CLI prints it and the markdown summary embeds it."""
    delivery = (
        f"delivered {report.delivered}, lost {report.lost}, duplicated {report.duplicated}"
        if report.verified
        else "not verified (run with verify to count deliveries and latency)"
    )
    lines = [
        f"{title}: {report.devices} devices on {report.connections} connections, "
        f"{report.seconds:.1f} s",
        f"sent {report.sent} ({report.msgs_per_s:.1f} msgs/s), acknowledged "
        f"{report.acknowledged}, failed {report.failed}, skipped {report.skipped}, "
        f"connect failures {report.connect_failures}",
        delivery,
    ]
    if report.interrupted:
        lines.append(f"interrupted by {report.interrupted}: stopped before the schedule's end")
    if report.resent:
        lines.append(f"re-sent {report.resent} rows left unacknowledged by a run that died")
    for shard, how in sorted(report.dead_shards.items()):
        lines.append(f"shard {shard}: {how}; its counts are unknown (not in the totals above)")
    if report.unsent or report.gave_up:
        lines.append(
            f"planned {report.planned} = sent {report.sent} + skipped {report.skipped} + "
            f"unsent {report.unsent}" + (" (gave up: broker unreachable)" if report.gave_up else "")
        )
    if report.verified:
        lines.append(
            f"latency p50 {_ms(report.latency_p50_ms)}, p95 {_ms(report.latency_p95_ms)}, "
            f"p99 {_ms(report.latency_p99_ms)}"
        )
    if report.rate_series:
        peak = max(report.rate_series)
        lines.append(
            f"msgs/s  |{sparkline(report.rate_series)}| peak {peak:.1f}, "
            f"{report.bucket_seconds:.1f} s per bar"
        )
    if report.verified and any(v is not None for v in report.latency_series):
        worst = max(v for v in report.latency_series if v is not None)
        lines.append(f"latency |{sparkline(report.latency_series)}| max {worst:.1f} ms")
    lines.extend(_phase_lines(report))
    lines.extend(_command_lines(report))
    lines.extend(f"error: {e}" for e in report.errors)
    return "\n".join(lines)


def _command_lines(report: SwarmReport) -> list[str]:
    """The control API: one line per command kind, then the state messages and faults."""
    lines = [
        f"command {c.kind}: received {c.received}, answered {c.answered}, errors {c.errors}, "
        f"answer p50 {_ms(c.latency_p50_ms)}, p99 {_ms(c.latency_p99_ms)}"
        for c in report.commands
    ]
    if report.state_transitions:
        states = ", ".join(f"{k} {v}" for k, v in sorted(report.state_transitions.items()))
        lines.append(f"state messages: {states}")
    if report.control_faults:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(report.control_faults.items()))
        lines.append(f"control faults: {faults}")
    return lines


def _phase_lines(report: SwarmReport) -> list[str]:
    lines = []
    for phase in report.phases:
        latency = (
            f", latency p50 {_ms(phase.latency_p50_ms)} p95 {_ms(phase.latency_p95_ms)} "
            f"p99 {_ms(phase.latency_p99_ms)}"
            if report.verified
            else ""
        )
        lines.append(
            f"phase {phase.name}: {phase.seconds:.1f} s, {phase.messages} msgs "
            f"({phase.msgs_per_s:.1f}/s), reconnects {phase.reconnects}{latency}"
        )
    if report.backlog_messages:
        drain = (
            "not drained"
            if report.backlog_drain_s is None
            else (f"drained in {report.backlog_drain_s:.2f} s")
        )
        lines.append(f"backlog: {report.backlog_messages} msgs, {drain}")
    return lines


def _phase_table(report: SwarmReport) -> str:
    """The phases as a markdown table (the UI shows it above the metric list)."""
    if not report.phases:
        return ""
    rows = "\n".join(
        f"| {p.name} | {p.seconds:.1f} | {p.messages} | {p.msgs_per_s:.1f} | "
        f"{_ms(p.latency_p50_ms)} | {_ms(p.latency_p95_ms)} | {_ms(p.latency_p99_ms)} | "
        f"{p.reconnects} |"
        for p in report.phases
    )
    drain = (
        f"\nBacklog: {report.backlog_messages} messages, drained in "
        f"{report.backlog_drain_s:.2f} s.\n"
        if report.backlog_drain_s is not None
        else ""
    )
    return (
        "| phase | seconds | messages | msgs/s | p50 | p95 | p99 | reconnects |\n"
        f"|---|---|---|---|---|---|---|---|\n{rows}\n{drain}\n"
    )


DELIVERY_CHECK = "delivery"


def delivery(qos: int, failed: int, lost: int | None) -> tuple[bool, str]:
    """The report's delivery check: at QoS 1 nothing may be lost or left unacknowledged.

    ``lost`` is None for an unverified run (only the verifier knows it). QoS 0 promises nothing,
    so such a run always passes.
    """
    if qos != 1:
        return True, "QoS 0: the broker promises no delivery, nothing to check"
    if failed or lost:
        return False, (
            f"QoS 1 messages lost: {lost or 0} lost on the way, {failed} never acknowledged by "
            "the broker; see the run's shard logs and the broker's"
        )
    if lost is None:
        return (
            True,
            "QoS 1: every message acknowledged (not verified: losses after the broker unknown)",
        )
    return True, "QoS 1: every message acknowledged and delivered"


def render_markdown(report: SwarmReport, title: str = "swarm") -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in report.metadata().items())
    chart = render_text(report, title)
    return (
        f"## Swarm report: {title}\n\n{_phase_table(report)}| metric | value |\n|---|---|\n"
        f"{rows}\n\n```\n{chart}\n```\n"
    )
