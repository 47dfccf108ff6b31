"""S3 object keys that depend only on the payload, so a re-sent payload overwrites its object.

The old uploader stamped keys with the upload time, so every retry made a second object. Here the
timestamp is the newest ``DATE_TIME`` in the payload and the suffix is the MD5 of the exact stored
text: the same payload always lands on the same key.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.digest import md5_of

_EPOCH = datetime(1970, 1, 1)


def epoch_ms(when: datetime) -> int:
    """Milliseconds since the Unix epoch of a naive datetime taken as UTC (like Oracle DATE)."""
    if when.tzinfo is not None:
        raise ValueError(f"{when!r} is tz-aware; the project's datetimes are naive UTC")
    return (when - _EPOCH) // timedelta(milliseconds=1)


def object_key(
    prefix: str, site_id: str, table: catalogue.Table, newest: datetime, body: str | bytes
) -> str:
    """``{prefix}/{SITE_ID}/LIVE_{table without LEVEL1_}/{13-digit epoch ms}-{md5 of body}``.

    An empty prefix gives no leading slash.
    """
    data = body.encode("utf-8") if isinstance(body, str) else body
    return object_key_for_md5(prefix, site_id, table, newest, md5_of(data).hexdigest())


def object_key_for_md5(
    prefix: str, site_id: str, table: catalogue.Table, newest: datetime, md5: str
) -> str:
    """The same key from a body's MD5 already computed (``payloads.payload_json_md5``)."""
    stamp = epoch_ms(newest)
    if stamp < 0:
        raise ValueError(f"{newest!r} is before 1970; it has no epoch-millisecond key")
    return f"{site_folder(prefix, site_id, table)}{stamp:013d}-{md5}"


def site_folder(prefix: str, site_id: str, table: catalogue.Table) -> str:
    """``{prefix}/{SITE_ID}/LIVE_{table without LEVEL1_}/``: where one site's objects of a table
    live, so a listing of one site and table never meets another's keys."""
    name = f"{site_id}/LIVE_{table.key_name}/"
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def key_time_ms(key: str) -> int | None:
    """The 13-digit epoch milliseconds a key starts its name with; None for a foreign key.

    Keys sort by this stamp within a site folder, so a time range is a range of keys.
    """
    name = key.rpartition("/")[2]
    stamp, dash, _ = name.partition("-")
    return int(stamp) if dash and len(stamp) == 13 and stamp.isdigit() else None


def key_md5(key: str) -> str | None:
    """The MD5 hex digest a key ends with (that of the exact stored text), if it has one."""
    _, dash, md5 = key.rpartition("/")[2].partition("-")
    return md5 if dash and len(md5) == 32 else None


def start_after(folder: str, after_ms: int) -> str:
    """The listing start (exclusive) that skips every key of ``folder`` stamped ``after_ms`` or
    earlier: ``~`` sorts after any MD5 digit, and before the next millisecond's keys."""
    return f"{folder}{after_ms:013d}~"
