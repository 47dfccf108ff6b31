"""Named swarm sessions: where each device had got to, so a later run carries on from there.

Each shard writes its own document (``<name>.shard-<k>.json``) whole, so concurrent shard
processes never write the same one; loading merges every document of the session, newest
position per device winning, and the report step folds them into ``<name>.json``. A run killed
before its report therefore still resumes from the shards' last periodic saves. The documents
live in a folder or under an S3 prefix (``session_store``), so shards on any host resume.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from iotswarm_pipelines.swarm.options import SwarmConfigError
from iotswarm_pipelines.swarm.session_store import DocumentStore, open_store

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SHARD_FILE = re.compile(r"\.shard-[0-9]+\.json")


@dataclass(frozen=True)
class DevicePosition:
    """The newest ``DATE_TIME`` a device sent, how many messages it has made, and when saved."""

    last_time: datetime | None = None
    cycles: int = 0
    saved_at: float = 0.0


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
    }


def _decode(data: Mapping) -> DevicePosition:
    last = data.get("last_time")
    return DevicePosition(
        last_time=datetime.fromisoformat(last) if last else None,
        cycles=int(data.get("cycles", 0)),
        saved_at=float(data.get("saved_at", 0.0)),
    )


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
    shards = [n for n in store.names(f"{name}.shard-") if SHARD_FILE.fullmatch(n[len(name) :])]
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
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise SwarmConfigError(
                f"session file {store.describe(document_name)} is unreadable ({exc}): delete it "
                "or pick another swarm_name"
            ) from None
        table, mode = document.get("table", table), document.get("mode", mode)
        for device, data in document.get("devices", {}).items():
            position = _decode(data)
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
