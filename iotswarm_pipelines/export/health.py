"""The export's health rules, one pure function per asset check (Dagster shells in checks.py).

Three checks per COSMOS table, on that table's health asset ``health_<TABLE>``:

- freshness: how far the slowest site's watermark trails the source's newest row, against a
  threshold that follows the table's cadence (``FRESHNESS_THRESHOLDS``);
- state health: the main and backup state files are both readable and hold the same state;
- export completeness: the last export stored one object for every payload it built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import state as state_rules
from iotswarm_pipelines.export.state import State, StateCopy


class Check(StrEnum):
    """The kinds of check; each table has one of each, named ``<table>_<kind>``."""

    FRESHNESS = "freshness"
    STATE_HEALTH = "state_health"
    EXPORT_COMPLETENESS = "export_completeness"


def check_name(kind: Check, table: catalogue.Table) -> str:
    """``level1_soilmet_30min_freshness``: the table (lower case) first, so a list of checks cut
    off at the UI's sidebar width still says which table each one is about."""
    return f"{table.name.lower()}_{kind.value}"


MIN_FRESHNESS_THRESHOLD = timedelta(minutes=15)
CADENCES_BEHIND = 3


def freshness_threshold(table: catalogue.Table) -> timedelta:
    """Three logging periods, never less than 15 minutes.

    Rows land some time after their period ends, the sensor looks every ``min(cadence, 5 min)``
    and a run may wait in the queue behind the table's previous one: a healthy 1-minute table
    trails by a few minutes, a 30-minute table by up to an hour.
    """
    return max(CADENCES_BEHIND * table.cadence, MIN_FRESHNESS_THRESHOLD)


FRESHNESS_THRESHOLDS: dict[str, timedelta] = {
    table.name: freshness_threshold(table) for table in catalogue.TABLES.values()
}
"""The one place to read (or override) each table's freshness threshold."""


@dataclass(frozen=True)
class Outcome:
    """One check's verdict: passed or not, one line for a person, numbers for the UI's plots."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    """Numbers and text; a shell may add Dagster's own values (a run link)."""
    warn_only: bool = False
    """A failure that heals itself (severity WARN rather than ERROR)."""


def site_lags(
    newest: Mapping[str, datetime], state: State, now: datetime, fallback_hours: float
) -> dict[str, timedelta]:
    """How much of each site's source data the export has still to send, as a time span.

    A site the state has never seen is measured from where its first export would start (now
    minus ``fallback_hours``, as the export and the sensors do), so a site that stopped logging
    long ago is not behind.
    """
    fallback = state_rules.fallback_start(now, fallback_hours)
    return {
        site: max(when - state_rules.export_start(state, site, fallback), timedelta(0))
        for site, when in newest.items()
    }


def watermarks_ahead(
    newest: Mapping[str, datetime], state: State
) -> dict[str, tuple[datetime, datetime]]:
    """Sites whose watermark is later than their newest source row: (watermark, newest row)."""
    return {
        site: (mark, when)
        for site, when in newest.items()
        if (mark := state_rules.watermark(state, site)) is not None and mark > when
    }


def freshness(
    table: catalogue.Table,
    newest: Mapping[str, datetime],
    state: State,
    now: datetime,
    fallback_hours: float,
    threshold: timedelta | None = None,
) -> Outcome:
    """Passes while no site's watermark trails its newest source row by more than the threshold,
    and none is ahead of it (a row dated in the future moved it, and was corrected or deleted:
    the rows the source gets below that watermark would never be exported)."""
    limit = threshold if threshold is not None else FRESHNESS_THRESHOLDS[table.name]
    ahead = watermarks_ahead(newest, state)
    if ahead:
        site, (mark, last) = next(iter(sorted(ahead.items())))
        return Outcome(
            False,
            f"{table.name}: the watermark of {len(ahead)} site(s) is ahead of the source's newest "
            f"row ({site}: {mark} > {last}); rows below it are never exported: set it back in the "
            "state (or replay the window with since)",
            {"sites_ahead": len(ahead), "ahead_site": site},
        )
    lags = site_lags(newest, state, now, fallback_hours)
    behind = sorted(site for site, lag in lags.items() if lag > limit)
    worst = max(lags, key=lambda site: lags[site], default=None)
    lag = lags[worst] if worst is not None else timedelta(0)
    metadata: dict[str, int | float | str | bool] = {
        "lag_seconds": lag.total_seconds(),
        "threshold_seconds": limit.total_seconds(),
        "sites": len(lags),
        "sites_behind": len(behind),
    }
    if worst is not None:
        metadata["slowest_site"] = worst
    if not behind:
        return Outcome(True, f"{table.name}: every site within {limit} of the source", metadata)
    return Outcome(
        False,
        f"{table.name}: {len(behind)} site(s) more than {limit} behind the source (slowest "
        f"{worst}, {lag}); check that its sensor is running and its last runs succeeded",
        metadata,
    )


def _describe(copy: StateCopy) -> str:
    if copy.content is None:
        return "missing"
    if isinstance(copy.content, state_rules.CorruptStateError):
        return f"corrupt ({copy.content})"
    return f"{len(copy.content['sites'])} sites"


def state_health(table: catalogue.Table, main: StateCopy, backup: StateCopy) -> Outcome:
    """Passes when both state files are readable and equal (or neither exists yet).

    Unequal but readable copies are a warning: an export stopped between its two writes (or
    running now) leaves them so, and its next save rewrites both.
    """
    readable = [isinstance(c.content, dict) for c in (main, backup)]
    metadata: dict[str, int | float | str | bool] = {
        "main": _describe(main),
        "backup": _describe(backup),
        "readable_copies": sum(readable),
    }
    if main.content is None and backup.content is None:
        return Outcome(True, f"{table.name}: no state files yet (never exported)", metadata)
    if not all(readable):
        return Outcome(
            False,
            f"{table.name}: state main {main.location} is {_describe(main)}, backup "
            f"{backup.location} is {_describe(backup)}; the next export rewrites both from the "
            f"readable one, or restore a copy if neither is",
            metadata,
        )
    if main.content != backup.content:
        return Outcome(
            False,
            f"{table.name}: the main and backup state files differ ({main.location}); an export "
            "was stopped between its two writes or is running now; its next save rewrites both",
            metadata,
            warn_only=True,
        )
    return Outcome(True, f"{table.name}: main and backup state readable and equal", metadata)


def completeness(
    table: catalogue.Table, payloads: int, objects: int, failed: int, run_id: str | None = None
) -> Outcome:
    """Passes when the export stored as many objects as it built payloads, and none failed."""
    metadata: dict[str, int | float | str | bool] = {
        "payloads": payloads,
        "objects": objects,
        "failed": failed,
        "missing": max(payloads - objects, 0),
    }
    if run_id is not None:
        metadata["run_id"] = run_id
    if failed == 0 and objects == payloads:
        return Outcome(True, f"{table.name}: all {payloads} payloads stored", metadata)
    return Outcome(
        False,
        f"{table.name}: the last export stored {objects} of {payloads} payloads ({failed} failed); "
        f"its watermarks cover only what was stored, so the next run re-sends the rest",
        metadata,
    )


def verdict(table: catalogue.Table, results: Mapping[str, Outcome]) -> Outcome:
    """One table's health in one line, from its checks' results (check name -> outcome): what
    the Catalog shows on the health asset's materialization, so it says what the graph's checks
    say. Healthy only when every check passed; otherwise each failed check's own words."""
    failed = {name: outcome for name, outcome in sorted(results.items()) if not outcome.passed}
    metadata: dict[str, int | float | str | bool] = {
        "healthy": not failed,
        "checks_passed": f"{len(results) - len(failed)} / {len(results)}",
        "failed_checks": ", ".join(failed) or "none",
    }
    if not failed:
        description = f"{table.name}: healthy, all {len(results)} checks passed"
    else:
        description = "; ".join(outcome.description for outcome in failed.values())
    metadata["verdict"] = description
    return Outcome(not failed, description, metadata)
