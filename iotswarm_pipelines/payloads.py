"""CR1000X JSON payloads, byte-compatible with what downstream consumers already read.

The rules (field types, process names, time format, key order) are those of the existing uploader
and swarm, written down in the team's reference notes; consumers have parsed this exact text for
years, so nothing here may change silently. That includes Python's own spelling of non-finite
floats (``NaN``, ``Infinity``, ``-Infinity``): the consumers parse with Python's ``json``, which
reads them back. ``strict_json=True`` writes ``null`` for them instead, for readers that follow
RFC 8259.

Building a payload is on the export's and the swarm's hot path (a 148-column SOILMET row per
message), so the ``head`` of a payload, which depends only on the station, the columns and the
column types, is built and serialised once and reused. Payloads returned by
:func:`cr1000x_payload` share that ``head`` object: treat payloads as read-only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter
from typing import Any

from iotswarm_pipelines.clock import naive_utc
from iotswarm_pipelines.digest import md5_of, md5_update

DATE_TIME_COLUMN = "DATE_TIME"
DEFAULT_OS_VERSION = "CR1000X.Std.07.02"
DEFAULT_PROG_NAME = "CPU:iotswarm.CR1X"
"""``prog_name`` of every payload unless told otherwise. It is part of the hashed text, so it
carries no release number: the same rows make the same object keys whatever the release. The old
tool wrote ``CPU:iotswarm-<its version>.CR1X`` (``CPU:iotswarm-1.6.10.CR1X`` for its last
release); pass that as ``prog_name`` to reproduce its bytes."""


@dataclass(frozen=True)
class PayloadFormat:
    """The two choices a payload's text depends on besides the rows: chosen once per destination,
    because a change moves every payload to a new object key."""

    prog_name: str = DEFAULT_PROG_NAME
    strict_json: bool = False  # False: NaN/Infinity as the old tool wrote them; True: null


DEFAULT_FORMAT = PayloadFormat()
"""The default: the old tool's text, with a ``prog_name`` that does not change between releases."""


# Field types from low to high rank; a column's type is the highest rank among its values.
TYPE_NAMES = (
    "xsi:nil",
    "xsd:string",
    "xsd:boolean",
    "xsd:dateTime",
    "xsd:short",
    "xsd:int",
    "xsd:long",
    "xsd:integer",
    "xsd:float",
    "xsd:double",
)
NIL, STRING, BOOLEAN, DATETIME, SHORT, INT, LONG, INTEGER, FLOAT, DOUBLE = range(len(TYPE_NAMES))

_FLOAT32_TINY = 1.1754943508222875e-38
_FLOAT32_MAX = 3.4028234663852886e38
_INT32 = 2**31
_INT64 = 2**63

_PROCESS_SUFFIXES = (
    ("_std", "Std"),
    ("_avg", "Avg"),
    ("_max", "Max"),
    ("_min", "Min"),
    ("_mom", "Mom"),
    ("_tot", "Tot"),
    ("_cov", "Cov"),
)


@lru_cache(maxsize=4096)
def process_of(column: str) -> str:
    """Campbell's processing name, read from the column name's suffix."""
    lowered = column.lower()
    for suffix, process in _PROCESS_SUFFIXES:
        if lowered.endswith(suffix):
            return process
    return "Smp"


def serial_number(station_name: str) -> str:
    """Each character's code point in decimal, joined by '-' (``ALIC1`` -> ``65-76-73-67-49``)."""
    return "-".join(str(ord(c)) for c in station_name)


def _int_rank(value: int) -> int:
    if value != 0 and -32768 <= value <= 32767:
        return SHORT
    if -_INT32 <= value < _INT32:  # zero lands here: an xsd:int, a quirk consumers rely on
        return INT
    if -_INT64 <= value < _INT64:
        return LONG
    return INTEGER


def _float_rank(value: float) -> int:
    magnitude = abs(value)
    if value != 0 and (magnitude < _FLOAT32_TINY or magnitude > _FLOAT32_MAX):
        return DOUBLE
    return FLOAT


@lru_cache(maxsize=65536)
def _str_rank(value: str) -> int:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return STRING
    return DATETIME


_RANK_BY_TYPE: dict[type, Callable[[Any], int]] = {
    type(None): lambda v: NIL,
    float: _float_rank,
    int: _int_rank,
    str: _str_rank,
    bool: lambda v: BOOLEAN,
    datetime: lambda v: DATETIME,
    date: lambda v: DATETIME,
}


def value_rank(value: Any) -> int:
    """The rank (index into ``TYPE_NAMES``) of one value's CR1000X type."""
    rank = _RANK_BY_TYPE.get(type(value))
    if rank is not None:
        return rank(value)
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return _int_rank(value)
    if isinstance(value, float):
        return _float_rank(value)
    if isinstance(value, Decimal):
        return _int_rank(int(value)) if value == value.to_integral_value() else FLOAT
    if isinstance(value, str):
        return _str_rank(value)
    if isinstance(value, date):
        return DATETIME
    raise TypeError(f"cannot put a {type(value).__name__} value ({value!r}) in a CR1000X payload")


def value_type(value: Any) -> str:
    return TYPE_NAMES[value_rank(value)]


def format_time(value: datetime | date | str) -> str:
    """ISO 8601 without a time zone and with microseconds: ``2024-06-01T00:30:00.000000``."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return naive_utc(value).isoformat(timespec="microseconds")


def _json_value(value: Any, strict_json: bool = False) -> Any:
    """The JSON form of one value; with ``strict_json`` a non-finite float becomes null."""
    if type(value) is float:
        return None if strict_json and not math.isfinite(value) else value
    if value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (datetime, date)):
        return format_time(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class Cr1000xPayload(dict[str, Any]):
    """A payload dict that remembers its shared, already serialised ``head``."""

    __slots__ = ("head", "prefix")
    head: dict[str, Any]
    prefix: _HeadPrefix


@dataclass(frozen=True)
class _HeadPrefix:
    """The serialised start of every payload with one head, and that start's MD5 state."""

    text: str
    md5: Any  # hashlib object: copy() it, feed it the rest, and the head is never re-hashed


@lru_cache(maxsize=8192)
def _head(
    station_name: str, columns: tuple[str, ...], ranks: tuple[int, ...], prog_name: str
) -> tuple[dict[str, Any], _HeadPrefix]:
    head = {
        "transaction": 0,
        "signature": 111111,
        "environment": {
            "station_name": station_name,
            "table_name": "default",
            "model": "CR1000X",
            "serial_no": serial_number(station_name),
            "os_version": DEFAULT_OS_VERSION,
            "prog_name": prog_name,
        },
        "fields": [
            {
                "name": name,
                "type": TYPE_NAMES[rank],
                "units": "",
                "process": process_of(name),
                "settable": False,
            }
            for name, rank in zip(columns, ranks, strict=True)
        ],
    }
    text = f'{{"head": {json.dumps(head)}, "data": '
    return head, _HeadPrefix(text, md5_of(text.encode()))


@lru_cache(maxsize=256)
def _value_columns(columns: tuple[str, ...]) -> tuple[tuple[str, ...], str | None, Any]:
    """Value columns, the time column, and a getter of the values in column order."""
    time_column = next((c for c in columns if c.upper() == DATE_TIME_COLUMN), None)
    values = tuple(c for c in columns if c != time_column)
    take = itemgetter(*values) if len(values) > 1 else (lambda row: (row[values[0]],))
    return values, time_column, take


_JSON_NATIVE = (type(None), bool, int, float, str)


class _RowPlan:
    """What one pattern of value types needs: computed once per pattern, reused for every row.

    A site's rows share one pattern (the same sensors present, the same columns NULL) and nearly
    always the same ranks: floats within float32 range, 32-bit integers. That common case is
    recognised with C-level ``map``/``min``/``max`` over the row and answered with a cached
    tuple; only rows outside it rank value by value.
    """

    __slots__ = ("common", "float_idx", "floats", "int_idx", "ints", "native", "other_idx")

    def __init__(self, types: tuple[type, ...]) -> None:
        self.float_idx = [i for i, t in enumerate(types) if t is float]
        self.int_idx = [i for i, t in enumerate(types) if t is int]
        self.other_idx = [i for i, t in enumerate(types) if t not in (float, int, type(None))]
        self.native = all(t in _JSON_NATIVE for t in types)
        self.floats = _getter(self.float_idx)
        self.ints = _getter(self.int_idx)
        # Key: the ranks of the non-numeric values, and which integers are short.
        self.common: dict[tuple[tuple[int, ...], tuple[bool, ...]], tuple[int, ...]] = {}

    def ranks(self, values: list[Any]) -> tuple[tuple[int, ...], bool]:
        """Ranks of one row's values, and whether the row holds a NaN or an infinity."""
        floats = self.floats(values)
        non_finite = bool(floats) and not all(map(math.isfinite, floats))
        others = tuple(value_rank(values[i]) for i in self.other_idx)
        ints = self.ints(values)
        if not non_finite and _ordinary_floats(floats) and _within_int32(ints):
            # Within 32 bits an integer's rank depends only on whether it is zero or short.
            key = (others, tuple(map(_is_short, ints)))
            ranks = self.common.get(key)
            if ranks is None:
                ranks = self.common[key] = self._ranks(values, others)
            return ranks, False
        return self._ranks(values, others), non_finite

    def _ranks(self, values: list[Any], others: tuple[int, ...]) -> tuple[int, ...]:
        ranks = [NIL] * len(values)
        for i in self.float_idx:
            ranks[i] = _float_rank(values[i])
        for i in self.int_idx:
            ranks[i] = _int_rank(values[i])
        for i, rank in zip(self.other_idx, others, strict=True):
            ranks[i] = rank
        return tuple(ranks)


def _ordinary_floats(floats: tuple[float, ...]) -> bool:
    """True when every float is an ``xsd:float``: zero, or a magnitude float32 can hold."""
    if not floats:
        return True
    magnitudes = list(map(abs, floats))
    return (
        max(magnitudes) <= _FLOAT32_MAX
        and min(filter(None, magnitudes), default=_FLOAT32_TINY) >= _FLOAT32_TINY
    )


def _within_int32(ints: tuple[int, ...]) -> bool:
    return not ints or (min(ints) >= -_INT32 and max(ints) < _INT32)


def _is_short(value: int) -> bool:
    return value != 0 and -32768 <= value <= 32767


def _getter(indices: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    if not indices:
        return lambda values: ()
    if len(indices) == 1:
        (index,) = indices
        return lambda values: (values[index],)
    return itemgetter(*indices)


@lru_cache(maxsize=4096)
def _row_plan(types: tuple[type, ...]) -> _RowPlan:
    return _RowPlan(types)


def cr1000x_payload(
    station_name: str,
    rows: Sequence[Mapping[str, Any]],
    payload_format: PayloadFormat = DEFAULT_FORMAT,
) -> Cr1000xPayload:
    """One payload carrying ``rows`` (oldest first) of one station, in the destination's format.

    Fields follow the first row's column order; ``DATE_TIME`` (any case) becomes each data row's
    ``time``. Types are computed over every row of the payload. NaN and infinities stay floats
    (written ``NaN``/``Infinity`` as the old tool did) unless ``strict_json`` makes them null.
    """
    strict_json = payload_format.strict_json
    if not rows:
        raise ValueError(f"a CR1000X payload needs at least one row (station {station_name})")
    columns, time_column, take = _value_columns(tuple(rows[0]))
    if time_column is None:
        raise ValueError(f"rows of station {station_name} have no DATE_TIME column: {columns[:5]}")
    ranks: tuple[int, ...] | None = None
    data = []
    for row in rows:
        values = list(take(row))
        plan = _row_plan(tuple(map(type, values)))
        row_ranks, non_finite = plan.ranks(values)
        ranks = row_ranks if ranks is None else tuple(map(max, ranks, row_ranks))
        if (strict_json and non_finite) or not plan.native:
            values = [_json_value(v, strict_json) for v in values]
        data.append({"time": format_time(row[time_column]), "vals": values})
    head, prefix = _head(station_name, columns, ranks, payload_format.prog_name)
    payload = Cr1000xPayload(head=head, data=data)
    payload.head, payload.prefix = head, prefix
    return payload


def _prefix_of(payload: Mapping[str, Any]) -> _HeadPrefix | None:
    """The cached head text, unless the payload was changed so that it no longer applies."""
    if (
        isinstance(payload, Cr1000xPayload)
        and list(payload) == ["head", "data"]
        and payload["head"] is getattr(payload, "head", None)
    ):
        return payload.prefix
    return None


def payload_json(payload: Mapping[str, Any]) -> str:
    """The exact text that is stored or sent: ``json.dumps`` with its default separators."""
    prefix = _prefix_of(payload)
    if prefix is None:
        return json.dumps(payload)
    return f"{prefix.text}{json.dumps(payload['data'])}}}"


def payload_json_md5(payload: Mapping[str, Any]) -> tuple[str, str]:
    """The payload's text and the MD5 hex digest of its UTF-8 bytes (the object key's suffix).

    The head, two thirds of a SOILMET payload, was hashed once when it was first built.
    """
    prefix = _prefix_of(payload)
    if prefix is None:
        text = json.dumps(payload)
        return text, md5_of(text.encode()).hexdigest()
    rest = f"{json.dumps(payload['data'])}}}"
    digest = prefix.md5.copy()
    md5_update(digest, rest.encode())
    return prefix.text + rest, digest.hexdigest()


def basic_payload(row: Mapping[str, Any], *, strict_json: bool = False) -> dict[str, Any]:
    """The row as plain JSON: the swarm's ``basic`` device type."""
    return {column: _json_value(value, strict_json) for column, value in row.items()}
