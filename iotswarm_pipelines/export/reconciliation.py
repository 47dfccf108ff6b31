"""What reconciling one table and UTC day means: the source's rows against the rows in objects.

Pure rules, no I/O. A row is its ``(SITE_ID, DATE_TIME)``; an object holds the rows of its
payload. For each site and day (``(00:00, 24:00]``, as the history export cuts days):

* found: source rows held by at least one object; missing: source rows held by none;
* pending: missing rows newer than the site's watermark, which the live export still owns (it
  sends them on its next run), so they are neither missing nor healed;
* duplicated: rows held by two or more objects (reported, never deleted);
* orphaned: rows held by objects that the source no longer has.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from iotswarm_pipelines.cosmos import catalogue


class UnreadablePayloadError(ValueError):
    """An object that is not a CR1000X payload (not JSON, or no station or times)."""


def day_window(day: date) -> tuple[datetime, datetime]:
    """``(after, until]`` of one UTC day: ``DATE_TIME`` ends its period, so midnight belongs to
    the day before (the history export's cut)."""
    start = datetime(day.year, day.month, day.day)
    return start, start + timedelta(days=1)


def days_between(since: date, until: date) -> list[date]:
    """Every day from ``since`` to ``until``, both included."""
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


def payload_rows(body: bytes) -> tuple[str, tuple[datetime, ...]]:
    """The station and the row times a stored payload holds (``head.environment.station_name``,
    ``data[].time``)."""
    try:
        payload = json.loads(body)
        station = payload["head"]["environment"]["station_name"]
        times = tuple(datetime.fromisoformat(entry["time"]) for entry in payload["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UnreadablePayloadError(
            f"not a CR1000X payload ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(station, str) or not times:
        raise UnreadablePayloadError("not a CR1000X payload (no station or no rows)")
    return station, times


@dataclass(frozen=True)
class SiteDay:
    """The reconciliation of one site on one day."""

    site_id: str
    rows: int  # in the source
    found: int
    missing: tuple[datetime, ...]
    pending: tuple[datetime, ...]
    duplicated: Mapping[datetime, tuple[str, ...]]  # row -> the keys holding it
    orphaned: Mapping[str, tuple[datetime, ...]]  # key -> rows the source no longer has
    objects: int  # objects holding rows of this day
    unreadable: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.missing or self.duplicated or self.orphaned or self.unreadable)


def compare_site(
    site_id: str,
    after: datetime,
    until: datetime,
    source_times: Iterable[datetime],
    holdings: Mapping[str, Sequence[datetime]],
    watermark: datetime | None,
    unreadable: Sequence[str] = (),
) -> SiteDay:
    """Compare one site's source rows in ``(after, until]`` with the rows each object holds.

    ``holdings`` maps object keys to their rows; rows outside the window are ignored (an object
    may straddle midnight: its other rows belong to the neighbouring day's reconciliation).
    """
    wanted = {t for t in source_times if after < t <= until}
    holders: dict[datetime, list[str]] = defaultdict(list)
    orphaned: dict[str, tuple[datetime, ...]] = {}
    for key, times in holdings.items():
        inside = sorted({t for t in times if after < t <= until})
        for when in inside:
            holders[when].append(key)
        gone = tuple(t for t in inside if t not in wanted)
        if gone:
            orphaned[key] = gone
    absent = sorted(wanted - holders.keys())
    behind = tuple(t for t in absent if watermark is None or t <= watermark)
    return SiteDay(
        site_id=site_id,
        rows=len(wanted),
        found=len(wanted) - len(absent),
        missing=behind,
        pending=tuple(t for t in absent if watermark is not None and t > watermark),
        duplicated={t: tuple(sorted(keys)) for t, keys in sorted(holders.items()) if len(keys) > 1},
        orphaned=orphaned,
        objects=len({key for keys in holders.values() for key in keys}),
        unreadable=tuple(unreadable),
    )


@dataclass
class TableDay:
    """One table on one day, every site, and what a heal did about its missing rows."""

    table: catalogue.Table
    day: date
    sites: list[SiteDay] = field(default_factory=list)
    objects_listed: int = 0
    objects_read: int = 0
    healed: int = 0  # missing rows re-exported and stored
    heal_failed: int = 0  # objects of the heal that were not stored

    @property
    def missing(self) -> int:
        return sum(len(site.missing) for site in self.sites)

    @property
    def missing_after_heal(self) -> int:
        return self.missing - self.healed

    @property
    def complete(self) -> bool:
        """Every source row up to the watermarks is in an object (after the heal, if any)."""
        return self.missing_after_heal == 0

    def counts(self) -> dict[str, int]:
        """The numbers an operator plots across runs."""
        sites = self.sites
        return {
            "rows": sum(site.rows for site in sites),
            "found": sum(site.found for site in sites),
            "missing": self.missing,
            "pending": sum(len(site.pending) for site in sites),
            "duplicated": sum(len(site.duplicated) for site in sites),
            "orphaned": sum(len(rows) for site in sites for rows in site.orphaned.values()),
            "orphaned_objects": sum(len(site.orphaned) for site in sites),
            "unreadable": sum(len(site.unreadable) for site in sites),
            "healed": self.healed,
            "heal_failed": self.heal_failed,
            "missing_after_heal": self.missing_after_heal,
            "objects_listed": self.objects_listed,
            "objects_read": self.objects_read,
        }

    def problems(self, limit: int = 5) -> dict[str, dict[str, list[str]]]:
        """Per site with anything wrong, the first ``limit`` rows or keys of each kind, then
        ``and N more`` when there are more (a count alone next to three times misleads)."""

        def first(values: Iterable) -> list[str]:
            texts = [v.isoformat() if isinstance(v, datetime) else str(v) for v in values]
            more = [f"and {len(texts) - limit} more"] if len(texts) > limit else []
            return texts[:limit] + more

        return {
            site.site_id: {
                name: first(values)
                for name, values in (
                    ("missing", site.missing),
                    ("duplicated", site.duplicated),
                    ("orphaned_objects", site.orphaned),
                    ("unreadable", site.unreadable),
                )
                if values
            }
            for site in self.sites
            if not site.clean
        }
