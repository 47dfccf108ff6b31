"""Watermark state rules, compatible with the existing uploader's pickle files.

A state is ``{"last_run": datetime | None, "sites": {site_id: {"site_id": str,
"last_data": datetime}}}``: the shape the old uploader pickled, so its files load unchanged and it
could read ours. The watermark of a site is its ``last_data``: every row up to it is stored.

Unpickling is restricted: a state file is data, and a pickle that names anything other than a
datetime (for example ``os.system``) is treated as corrupt without running anything. Allowed are
``datetime.datetime`` plus ``datetime.timezone`` / ``datetime.timedelta`` (so a tz-aware value
written by some other tool still loads; it is converted to naive UTC, as the project never holds
tz-aware datetimes) and, for protocol 0-2 pickles, a latin-1-only stand-in for
``_codecs.encode``, which those protocols use to carry a datetime's bytes.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, overload

from iotswarm_pipelines.clock import naive_utc

State = dict[str, Any]

# Protocol 4 is readable by every Python 3 the old uploader can have run on.
PICKLE_PROTOCOL = 4


class CorruptStateError(ValueError):
    """A state file that cannot be trusted: not a pickle, a forbidden pickle, or a wrong shape."""


class StateCopy(NamedTuple):
    """One state file (main or backup) as read, without any recovery: for the health check."""

    location: str
    """Where the copy lives: a path, or an object's URL."""
    content: State | CorruptStateError | None
    """The state; why it cannot be trusted; or None when the copy does not exist."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"encoding {encoding!r} is not allowed in a state file")
    return text.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("datetime", "datetime"): datetime,
    ("datetime", "timezone"): timezone,
    ("datetime", "timedelta"): timedelta,
    ("_codecs", "encode"): _latin1_encode,
}


class _StateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{module}.{name} is not allowed in a state file (only datetimes)"
            ) from None


def empty_state() -> State:
    return {"last_run": None, "sites": {}}


def _validated(obj: Any) -> State:
    """A fresh, checked copy of an unpickled object; raises CorruptStateError on a wrong shape."""
    if not isinstance(obj, dict) or set(obj) != {"last_run", "sites"}:
        raise CorruptStateError("a state must be a dict with exactly 'last_run' and 'sites'")
    last_run = obj["last_run"]
    if last_run is not None and not isinstance(last_run, datetime):
        raise CorruptStateError(f"'last_run' must be a datetime or None, not {last_run!r}")
    sites = obj["sites"]
    if not isinstance(sites, dict):
        raise CorruptStateError(f"'sites' must be a dict, not {type(sites).__name__}")
    checked: dict[str, dict[str, Any]] = {}
    for site_id, entry in sites.items():
        if (
            not isinstance(site_id, str)
            or not isinstance(entry, dict)
            or set(entry) != {"site_id", "last_data"}
            or entry["site_id"] != site_id
            or not isinstance(entry["last_data"], datetime)
        ):
            raise CorruptStateError(
                f"site entry {site_id!r} must be {{'site_id': {site_id!r}, 'last_data': datetime}}"
                f", not {entry!r}"
            )
        checked[site_id] = {"site_id": site_id, "last_data": naive_utc(entry["last_data"])}
    return {"last_run": None if last_run is None else naive_utc(last_run), "sites": checked}


def loads_state(data: bytes) -> State:
    """Unpickle a state file's bytes; anything but a well-formed state is CorruptStateError."""
    try:
        obj = _StateUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # every unpickling failure means the same thing: do not trust it
        raise CorruptStateError(
            f"not a readable state pickle ({type(exc).__name__}: {exc})"
        ) from exc
    return _validated(obj)


def dumps_state(state: State) -> bytes:
    """Pickle a state exactly as the existing uploader did: a plain dict of datetimes."""
    return pickle.dumps(_validated(state), protocol=PICKLE_PROTOCOL)


def watermark(state: State, site_id: str) -> datetime | None:
    entry = state["sites"].get(site_id)
    return None if entry is None else entry["last_data"]


OLDEST_ROW_TIME = datetime(1, 1, 1)
"""The oldest DATE_TIME a source row can hold as read (a Python datetime): a fallback start
further back is clamped to it."""


def describe_watermarks(state: State, limit: int = 3) -> str:
    """The state's watermarks for a message, newest first: ``ALIC1 2024-06-01 01:00:00, …``."""
    by_site = sorted((site, entry["last_data"]) for site, entry in state["sites"].items())
    marks = sorted(by_site, key=lambda mark: mark[1], reverse=True)  # ties stay by site
    if not marks:
        return "none (no site yet)"
    text = ", ".join(f"{site} {when:%Y-%m-%d %H:%M:%S}" for site, when in marks[:limit])
    return text + (f" and {len(marks) - limit} more" if len(marks) > limit else "")


@overload
def fallback_start(now: datetime, fallback_hours: float) -> datetime: ...
@overload
def fallback_start(now: datetime, fallback_hours: float | None) -> datetime | None: ...
def fallback_start(now: datetime, fallback_hours: float | None) -> datetime | None:
    """Where a site the state has never seen starts: ``fallback_hours`` back from ``now``,
    but never before ``OLDEST_ROW_TIME`` (the old tool's users write 1000000, or more, to mean
    every row).

    None (no fallback) means from the site's first row.
    """
    if fallback_hours is None:
        return None
    try:
        return max(now - timedelta(hours=fallback_hours), OLDEST_ROW_TIME)
    except OverflowError:  # more hours than a datetime can count back
        return OLDEST_ROW_TIME


@overload
def export_start(state: State, site_id: str, fallback: datetime) -> datetime: ...
@overload
def export_start(state: State, site_id: str, fallback: datetime | None) -> datetime | None: ...
def export_start(state: State, site_id: str, fallback: datetime | None) -> datetime | None:
    """The start rule of the live export: a site's next rows are those after its watermark,
    or after the fallback start (``fallback_start``) when the state has never seen it.

    The export, its sensors and the freshness check all ask this, so they agree on what is
    pending.
    """
    mark = watermark(state, site_id)
    return fallback if mark is None else mark


def advance(state: State, updates: Mapping[str, datetime]) -> State:
    """A new state in which each updated site moves forward, never back.

    A site is added when new, or moved when its new time is later; an older or equal time is
    ignored, so a replay of an old window can never rewind a watermark. ``last_run`` follows the
    newest data in the state (and never moves back either).
    """
    new = _validated(state)
    for site_id, when in updates.items():
        if not isinstance(when, datetime) or when.tzinfo is not None:
            raise ValueError(f"watermark for {site_id!r} must be a naive UTC datetime: {when!r}")
        current = watermark(new, site_id)
        if current is None or when > current:
            new["sites"][site_id] = {"site_id": site_id, "last_data": when}
    newest = max((e["last_data"] for e in new["sites"].values()), default=None)
    if newest is not None and (new["last_run"] is None or newest > new["last_run"]):
        new["last_run"] = newest
    return new
