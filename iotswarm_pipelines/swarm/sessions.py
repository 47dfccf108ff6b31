"""Named swarm sessions: where each device had got to, so a later run carries on from there.

Each shard writes its own document (``<name>.shard-<k>.json``) whole, so concurrent shard
processes never write the same one; loading merges every document of the session, newest
position per device winning, and the report step folds them into ``<name>.json``. A run killed
before its report therefore still resumes from the shards' last periodic saves. The documents
live in a folder or under an S3 prefix (``session_store``), so shards on any host resume.

A device's position is its last *acknowledged* row (what the broker has), with the last row it
sent beside it: a resumed device re-sends only the rows between the two, in order, and counts
them. Between periodic saves a shard appends each turn's new positions to its journal
(``<name>.shard-<k>.acks-<n>``, a local folder only), so a shard killed outright loses at most
the acknowledgements of its last turn, not those since its last save.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from iotswarm_pipelines.swarm.options import SwarmConfigError
from iotswarm_pipelines.swarm.session_store import DocumentStore, open_store

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SHARD_FILE = re.compile(r"\.shard-[0-9]+\.json")
JOURNAL_FILE = re.compile(r"\.shard-[0-9]+\.acks-[0-9]+")


@dataclass(frozen=True)
class DevicePosition:
    """The newest acknowledged ``DATE_TIME`` of a device, its messages acknowledged so far, when
    saved, and the newest ``DATE_TIME`` it sent (later while acknowledgements are due)."""

    last_time: datetime | None = None
    cycles: int = 0
    saved_at: float = 0.0
    sent_time: datetime | None = None


@dataclass(frozen=True)
class Session:
    name: str
    table: str
    mode: str
    positions: dict[str, DevicePosition]


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise SwarmConfigError(
            f"swarm_name {name!r} is not usable as a session name: use 1-100 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )


def _encode(position: DevicePosition) -> dict:
    return {
        "last_time": position.last_time.isoformat() if position.last_time else None,
        "cycles": position.cycles,
        "saved_at": position.saved_at,
        "sent_time": position.sent_time.isoformat() if position.sent_time else None,
    }


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _decode(data: Mapping) -> DevicePosition:
    return DevicePosition(
        last_time=_time(data.get("last_time")),
        cycles=int(data.get("cycles", 0)),
        saved_at=float(data.get("saved_at", 0.0)),
        sent_time=_time(data.get("sent_time")),
    )


def journal_line(device: str, position: DevicePosition) -> str:
    """One journal line: device, acknowledged time, acknowledged cycles, saved at, sent time."""
    acked, sent = position.last_time, position.sent_time
    return (
        f"{device}\t{acked.isoformat() if acked else ''}\t{position.cycles}\t"
        f"{position.saved_at:.6f}\t{sent.isoformat() if sent else ''}\n"
    )


def _journal_positions(data: bytes) -> Iterator[tuple[str, DevicePosition]]:
    """The journal's positions; a line cut short by a kill mid-write is skipped."""
    for line in data.decode(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) != 5:
            continue
        device, acked, cycles, saved_at, sent = fields
        try:
            yield device, DevicePosition(_time(acked), int(cycles), float(saved_at), _time(sent))
        except ValueError:
            continue


def _document(name: str, table: str, mode: str, positions: Mapping[str, DevicePosition]) -> bytes:
    # The C encoder with compact separators: a 20,000-device session stays fast to save.
    document = {
        "name": name,
        "table": table,
        "mode": mode,
        "saved_at": time.time(),
        "devices": {device: _encode(p) for device, p in positions.items()},
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _names(name: str, store: DocumentStore) -> list[str]:
    """The session's documents: the folded one first (when it exists), then the shards'."""
    main = f"{name}.json"
    shards = [
        n
        for n in store.names(f"{name}.shard-")
        if SHARD_FILE.fullmatch(n[len(name) :]) or JOURNAL_FILE.fullmatch(n[len(name) :])
    ]
    return ([main] if main in store.names(main) else []) + shards


def save_shard(
    name: str,
    shard: int,
    table: str,
    mode: str,
    positions: Mapping[str, DevicePosition],
    directory: str | os.PathLike | None = None,
) -> str:
    """Write the shard's positions; returns where (a path or an s3:// URI)."""
    store = open_store(directory)
    document = f"{name}.shard-{shard}.json"
    store.write(document, _document(name, table, mode, positions))
    return store.describe(document)


def load_session(name: str, directory: str | os.PathLike | None = None) -> Session | None:
    """The merged session, or None when nothing was saved under ``name``."""
    store = open_store(directory)
    documents = _names(name, store)
    table = mode = ""
    positions: dict[str, DevicePosition] = {}
    found = False
    for document_name in documents:
        data = store.read(document_name)
        if data is None:  # folded away by a report step since it was listed
            continue
        found = True
        if JOURNAL_FILE.fullmatch(document_name[len(name) :]):
            entries: Iterable[tuple[str, DevicePosition]] = _journal_positions(data)
        else:
            try:
                document = json.loads(data)
            except ValueError as exc:
                raise SwarmConfigError(
                    f"session file {store.describe(document_name)} is unreadable ({exc}): "
                    "delete it or pick another swarm_name"
                ) from None
            table, mode = document.get("table", table), document.get("mode", mode)
            entries = ((d, _decode(p)) for d, p in document.get("devices", {}).items())
        for device, position in entries:
            known = positions.get(device)
            if known is None or (position.saved_at, position.cycles) > (
                known.saved_at,
                known.cycles,
            ):
                positions[device] = position
    if not found:
        return None
    return Session(name=name, table=table, mode=mode, positions=positions)


def consolidate(name: str, directory: str | os.PathLike | None = None) -> str | None:
    """Fold the shard documents into ``<name>.json`` (written before the shards' go)."""
    store = open_store(directory)
    session = load_session(name, directory)
    if session is None:
        return None
    main = f"{name}.json"
    store.write(
        main, _document(name, session.table, session.mode, dict(sorted(session.positions.items())))
    )
    for document in _names(name, store):
        if document != main:
            store.delete(document)
    return store.describe(main)


def save_report(name: str, report: Mapping, directory: str | os.PathLike | None = None) -> str:
    """Keep the swarm's report next to its session as ``<name>.report.json``; returns where."""
    store = open_store(directory)
    document = f"{name}.report.json"
    store.write(document, json.dumps(report, indent=1, sort_keys=True).encode())
    return store.describe(document)


def list_sessions(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the saved sessions, folded or still in shard documents, sorted."""
    found = set()
    for document in open_store(directory).names(""):
        if document.endswith(".json") and not document.endswith(".report.json"):
            found.add(SHARD_FILE.sub("", document).removesuffix(".json"))
    return sorted(found)


def init_session(name: str, directory: str | os.PathLike | None = None) -> str:
    """An empty session: no device has a position yet (the old ``sessions init``)."""
    check_name(name)
    store = open_store(directory)
    store.write(f"{name}.json", _document(name, "", "", {}))
    return store.describe(f"{name}.json")


def remove_session(name: str, directory: str | os.PathLike | None = None) -> bool:
    """Delete every document of a session and its report; False when there was none."""
    check_name(name)
    store = open_store(directory)
    report = f"{name}.report.json"
    documents = _names(name, store) + [n for n in store.names(report) if n == report]
    for document in documents:
        store.delete(document)
    return bool(documents)
