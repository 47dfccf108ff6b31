"""The metrics a live export run and a reconciliation push when they end (``docs/metrics.md``).

Each run pushes to its table's group (``job="iotswarm_export"`` or ``"iotswarm_reconcile"``,
``table``), adding to it: a failed export replaces its counts, duration and the end time but
leaves the last success time, and the lags, of the last run that knew them. Labels stay
bounded: per table, site (51) and day, never per row or object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from iotswarm_pipelines.export.reconciliation import TableDay
from iotswarm_pipelines.metrics import exposition

EXPORT_JOB = "iotswarm_export"
RECONCILE_JOB = "iotswarm_reconcile"


@dataclass(frozen=True)
class ExportRun:
    """What one live export run of ``table`` did, for its metrics."""

    table: str
    started: float  # unix time
    ended: float
    succeeded: bool
    rows: int = 0
    objects: int = 0
    site_lags: Mapping[str, float] = field(default_factory=dict)
    """Seconds each site's watermark trails its newest source row (empty: unknown)."""
    freshness_threshold: float | None = None


def export_registry(run: ExportRun) -> CollectorRegistry:
    registry = CollectorRegistry()
    table = {"table": run.table}

    def gauge(name: str, doc: str, value: float, labels: Mapping[str, str] = table) -> None:
        Gauge(name, doc, list(labels), registry=registry).labels(**labels).set(value)

    def counter(name: str, doc: str, value: float) -> None:
        Counter(name, doc, ["table"], registry=registry).labels(**table).inc(value)

    p = "iotswarm_export_"
    counter(p + "rows", "Rows exported by the last run", run.rows)
    counter(p + "objects", "Objects stored by the last run", run.objects)
    counter(p + "failures", "1 if the last run failed, else 0", 0 if run.succeeded else 1)
    gauge(p + "last_run_timestamp_seconds", "Unix time the last run ended", run.ended)
    gauge(p + "run_duration_seconds", "Seconds the last run took", run.ended - run.started)
    if run.succeeded:
        gauge(p + "last_success_timestamp_seconds", "Unix time of the last success", run.ended)
    if run.freshness_threshold is not None:
        threshold = run.freshness_threshold
        gauge(p + "freshness_threshold_seconds", "The table's freshness threshold", threshold)
    if run.site_lags:
        lag = Gauge(
            p + "watermark_lag_seconds",
            "Seconds a site's watermark trails its newest source row",
            ["table", "site"],
            registry=registry,
        )
        for site, seconds in sorted(run.site_lags.items()):
            lag.labels(table=run.table, site=site).set(seconds)
        worst = max(run.site_lags.values())
        gauge(p + "max_watermark_lag_seconds", "The slowest site's watermark lag", worst)
    return registry


def push_export(url: str | None, run: ExportRun, warn: Callable[[str], None]) -> bool:
    """Push the run's metrics (nothing without a URL); a failure is one warning, never raised."""
    if not url:
        return False
    grouping = {"table": run.table}
    return exposition.push(url, EXPORT_JOB, export_registry(run), grouping, warn, add=True)


@dataclass(frozen=True)
class ReconciledDay:
    """One day of one table as reconciliation found it."""

    day: str  # ISO date
    missing: int
    duplicated: int
    orphaned: int

    @classmethod
    def of(cls, result: TableDay) -> ReconciledDay:
        """Missing rows are those still missing after a heal, if one ran."""
        counts = result.counts()
        return cls(
            result.day.isoformat(),
            result.missing_after_heal,
            counts["duplicated"],
            counts["orphaned"],
        )


def reconcile_registry(
    table: str, days: Iterable[ReconciledDay], ended: float
) -> CollectorRegistry:
    registry = CollectorRegistry()
    p = "iotswarm_reconcile_"
    gauges = {
        kind: Gauge(p + f"{kind}_rows", doc, ["table", "day"], registry=registry)
        for kind, doc in (
            ("missing", "Source rows with no object (after any heal)"),
            ("duplicated", "Rows stored in more than one object"),
            ("orphaned", "Rows in objects that the source no longer has"),
        )
    }
    for day in days:
        for kind, gauge in gauges.items():
            gauge.labels(table=table, day=day.day).set(getattr(day, kind))
    Gauge(
        p + "last_run_timestamp_seconds",
        "Unix time the last reconciliation ended",
        ["table"],
        registry=registry,
    ).labels(table=table).set(ended)
    return registry


def push_reconcile(
    url: str | None,
    table: str,
    days: Iterable[ReconciledDay],
    ended: float,
    warn: Callable[[str], None],
) -> bool:
    """Push one reconciliation's days of ``table`` (replacing the days the group held before)."""
    if not url:
        return False
    registry = reconcile_registry(table, days, ended)
    return exposition.push(url, RECONCILE_JOB, registry, {"table": table}, warn)
