"""Time as the project keeps it: naive datetimes in GMT, like the ``DATE`` values of COSMOS.

Every "now" and every time read from outside (a command line, a config, a control message)
passes through here, so an aware time never meets a naive one in a comparison.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now as a naive GMT datetime."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(value: datetime) -> datetime:
    """``value`` as a naive GMT datetime: an aware one converted, a naive one taken as GMT."""
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
