"""S3 object keys that depend only on the payload, so a re-sent payload overwrites its object.

The old uploader stamped keys with the upload time, so every retry made a second object. Here the
timestamp is the newest ``DATE_TIME`` in the payload and the suffix is the MD5 of the exact stored
text: the same payload always lands on the same key.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from iotswarm_pipelines.cosmos import catalogue

_EPOCH = datetime(1970, 1, 1)

# hashlib releases the GIL for any input over 2047 bytes; taking it back while the upload threads
# are busy costs far more than hashing a payload, so the digest is fed pieces below that size.
_GIL_HELD_CHUNK = 2047


def body_md5(data: bytes) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    view = memoryview(data)
    for start in range(0, len(view), _GIL_HELD_CHUNK):
        digest.update(view[start : start + _GIL_HELD_CHUNK])
    return digest.hexdigest()


def epoch_ms(when: datetime) -> int:
    """Milliseconds since the Unix epoch of a naive datetime taken as UTC (like Oracle DATE)."""
    if when.tzinfo is not None:
        raise ValueError(f"{when!r} is tz-aware; the project's datetimes are naive UTC")
    return (when - _EPOCH) // timedelta(milliseconds=1)


def object_key(prefix: str, site_id: str, table: str, newest: datetime, body: str | bytes) -> str:
    """``{prefix}/{SITE_ID}/LIVE_{table without LEVEL1_}/{13-digit epoch ms}-{md5 of body}``.

    ``table`` may use either spelling the catalogue knows; an empty prefix gives no leading slash.
    """
    data = body.encode("utf-8") if isinstance(body, str) else body
    stamp = epoch_ms(newest)
    if stamp < 0:
        raise ValueError(f"{newest!r} is before 1970; it has no epoch-millisecond key")
    name = f"{site_id}/LIVE_{catalogue.get_table(table).key_name}/{stamp:013d}-"
    name += body_md5(data)
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name
