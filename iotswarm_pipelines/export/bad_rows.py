"""Rows the export must not send as they are: named by site and time, never by their value.

A poison row (a value no payload can carry, a ``DATE_TIME`` the database cannot hand over) stops
only its own site, just before the row, so the site's watermark cannot pass it and the other
sites export as usual. A row dated later than now plus a tolerance stops its site the same way:
it would move the watermark past every real row that comes after it. Whether to send a site's
rows beyond a poison row is the operator's call, made explicit and recorded (``skip_rows``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from iotswarm_pipelines import payloads
from iotswarm_pipelines.cosmos.catalogue import DATE_TIME, SITE_ID

DEFAULT_FUTURE_TOLERANCE = timedelta(hours=1)
"""How far past now a row may be dated (loggers' clocks drift) before its site is held."""

SKIP_FORMAT = "SITE@YYYY-MM-DDTHH:MM"


@dataclass(frozen=True)
class StoppedSite:
    """Why a site's export stopped before a row, in one line without the row's values."""

    site_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.site_id} {self.reason}"


def skip_key(site_id: str, when: datetime) -> str:
    """How a row is named in ``skip_rows``: ``ALIC1@2024-06-01T10:30:00``."""
    return f"{site_id}@{when.isoformat()}"


def parse_skip_rows(entries: Iterable[str]) -> set[tuple[str, datetime]]:
    """``["ALIC1@2024-06-01T10:30"]`` -> ``{("ALIC1", datetime(2024, 6, 1, 10, 30))}``."""
    parsed = set()
    for entry in entries:
        site, _, when = entry.partition("@")
        try:
            time = datetime.fromisoformat(when.strip())
        except ValueError:
            time = None
        if not site.strip() or time is None or time.tzinfo is not None:
            raise ValueError(
                f"skip_rows entry {entry!r} must look like {SKIP_FORMAT} (GMT, no time zone)"
            )
        parsed.add((site.strip(), time))
    return parsed


def unpayloadable(row: Mapping[str, Any]) -> str | None:
    """Why ``row`` cannot go in a payload (the column and the value's type), or None."""
    for column, value in row.items():
        try:
            payloads.value_rank(value)
        except TypeError:
            return f"column {column} holds a {type(value).__name__} value, which no payload carries"
    return None


def at_row(row: Mapping[str, Any], why: str) -> StoppedSite:
    return StoppedSite(
        row[SITE_ID],
        f"at {row[DATE_TIME]:%Y-%m-%d %H:%M:%S}: {why}; correct the row, or skip it with "
        f"skip_rows: [{skip_key(row[SITE_ID], row[DATE_TIME])!r}] (recorded in the run)",
    )


def unreadable(site_id: str, after: datetime | None, exc: Exception) -> StoppedSite:
    """A row the driver cannot convert; it fails its whole fetch, so the site stops at the last
    row delivered (or where it started)."""
    where = f" after {after:%Y-%m-%d %H:%M:%S}" if after is not None else ""
    return StoppedSite(
        site_id,
        f"has a row{where} that the database cannot hand over ({type(exc).__name__}, e.g. an "
        "unparseable DATE_TIME); correct it in the source",
    )


FIRST_SITES = 3
"""How many sites a sentence about many sites names before "and N more"."""


def future_rows(newest: Mapping[str, datetime], horizon: datetime) -> str:
    """One sentence for every site holding rows dated after ``horizon``, however many there are:
    the count, the latest time and the first few sites (a follow run at speed once dated rows
    ahead at all 47 sites, and 47 copies of one sentence hid the point)."""
    latest = max(newest.values())
    if len(newest) == 1:
        (site,) = newest
        return (
            f"{site} has rows dated up to {latest:%Y-%m-%d %H:%M:%S}, later than now plus the "
            f"tolerance ({horizon:%Y-%m-%d %H:%M:%S}); they are held in the source and the site's "
            "watermark stops before them; correct their DATE_TIME (or wait until they are due)"
        )
    return (
        f"{len(newest)} sites ({name_some(sorted(newest))}) have rows dated up to "
        f"{latest:%Y-%m-%d %H:%M:%S}, later than now plus the tolerance "
        f"({horizon:%Y-%m-%d %H:%M:%S}); they are held in the source and the sites' watermarks "
        "stop before them; correct their DATE_TIME (or wait until they are due)"
    )


def name_some(names: Sequence[str], first: int = FIRST_SITES) -> str:
    """``ALIC1, BALRD, BUNNY and 44 more``."""
    shown = ", ".join(names[:first])
    return f"{shown} and {len(names) - first} more" if len(names) > first else shown
