"""Named swarm sessions: where each device had got to, so a later run carries on from there.

Each shard writes its own file (``<name>.shard-<k>.json``) atomically, so concurrent shard
processes never write the same file; loading merges every file of the session, newest
position per device winning, and the report step folds them into ``<name>.json``. A run killed
before its report therefore still resumes from the shards' last periodic saves.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from iotswarm_pipelines import settings
from iotswarm_pipelines.atomic import write_atomically
from iotswarm_pipelines.swarm.options import SwarmConfigError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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


def sessions_dir(directory: str | os.PathLike | None = None) -> Path:
    return Path(directory) if directory else settings.data_dir() / "swarm_sessions"


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


def _write_atomic(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The C encoder with compact separators: a 20,000-device session stays fast to save.
    write_atomically(path, json.dumps(document, separators=(",", ":")).encode())


def _files(name: str, directory: Path) -> list[Path]:
    main = directory / f"{name}.json"
    shards = sorted(directory.glob(f"{glob_escape(name)}.shard-*.json"))
    return ([main] if main.exists() else []) + shards


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def save_shard(
    name: str,
    shard: int,
    table: str,
    mode: str,
    positions: Mapping[str, DevicePosition],
    directory: str | os.PathLike | None = None,
) -> Path:
    path = sessions_dir(directory) / f"{name}.shard-{shard}.json"
    _write_atomic(
        path,
        {
            "name": name,
            "table": table,
            "mode": mode,
            "saved_at": time.time(),
            "devices": {device: _encode(p) for device, p in positions.items()},
        },
    )
    return path


def load_session(name: str, directory: str | os.PathLike | None = None) -> Session | None:
    """The merged session, or None when nothing was saved under ``name``."""
    folder = sessions_dir(directory)
    files = _files(name, folder)
    if not files:
        return None
    table = mode = ""
    positions: dict[str, DevicePosition] = {}
    for path in files:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SwarmConfigError(
                f"session file {path} is unreadable ({exc}): delete it or pick another swarm_name"
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
    return Session(name=name, table=table, mode=mode, positions=positions)


def consolidate(name: str, directory: str | os.PathLike | None = None) -> Path | None:
    """Fold the shard files into ``<name>.json`` (written before the shard files go)."""
    folder = sessions_dir(directory)
    session = load_session(name, folder)
    if session is None:
        return None
    path = folder / f"{name}.json"
    _write_atomic(
        path,
        {
            "name": name,
            "table": session.table,
            "mode": session.mode,
            "saved_at": time.time(),
            "devices": {d: _encode(p) for d, p in sorted(session.positions.items())},
        },
    )
    for shard_file in _files(name, folder):
        if shard_file != path:
            shard_file.unlink(missing_ok=True)
    return path
