"""historicData answers: a window of rows as CSIJSON messages, none larger than IoT Core takes.

Each message is a payload exactly as the device publishes its own (the project's payload
builder: same head, same fields, same bytes for the same rows), so a consumer reads a resent
row the way it read the live one. Rows go out once, oldest first, in as few messages as fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from iotswarm_pipelines import payloads
from iotswarm_pipelines.swarm.iot_core import MAX_PAYLOAD_BYTES


def _encode(station: str, rows: Sequence[Mapping[str, Any]], fmt: payloads.PayloadFormat) -> bytes:
    return payloads.payload_json(payloads.cr1000x_payload(station, rows, fmt)).encode()


def empty(station: str, fmt: payloads.PayloadFormat, template: Mapping[str, Any] | None) -> bytes:
    """The answer for a window without rows: the head (fields from ``template``, a row of the
    site, when there is one) and ``"data": []``, as the real logger sends it."""
    if template is None:
        head = {"head": {"transaction": 0, "signature": 111111, "fields": []}, "data": []}
        return payloads.payload_json(head).encode()
    payload = payloads.cr1000x_payload(station, [template], fmt)
    payload["data"] = []
    return payloads.payload_json(payload).encode()


def messages(
    station: str,
    rows: Sequence[Mapping[str, Any]],
    fmt: payloads.PayloadFormat,
    template: Mapping[str, Any] | None = None,
    limit: int = MAX_PAYLOAD_BYTES,
) -> list[bytes]:
    """``rows`` (oldest first) as messages of at most ``limit`` bytes, in order, each row once.

    A batch is sized from the bytes per row of the previous one and halved until it fits;
    a single row larger than ``limit`` goes alone (no split can make it smaller).
    """
    if not rows:
        return [empty(station, fmt, template)]
    out: list[bytes] = []
    start, size = 0, len(rows)
    while start < len(rows):
        size = max(1, min(size, len(rows) - start))
        body = _encode(station, rows[start : start + size], fmt)
        while len(body) > limit and size > 1:
            size = max(1, min(size // 2, size * limit * 9 // (10 * len(body))))
            body = _encode(station, rows[start : start + size], fmt)
        out.append(body)
        start += size
        per_row = len(body) / size
        size = max(1, int(limit * 0.95 / per_row))
    return out
