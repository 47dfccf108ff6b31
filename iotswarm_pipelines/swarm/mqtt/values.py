"""The engine's value types: what a device hands it, how it is scheduled, what a shard reports.

Apart from the engine so that planning, data modes and reports can name them without
importing paho or the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Message:
    payload: bytes
    wait_after: float


class DeviceStream(Protocol):
    device_id: str
    topic: str

    def next_message(self) -> Message | None: ...


@dataclass(frozen=True)
class Schedule:
    max_cycles: int = 1
    delay_start: float = 0.0
    no_send_probability: float = 0.0
    seed: int = 0


@dataclass
class ShardResult:
    shard: int
    devices: int
    connections: int
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    skipped: int = 0
    connect_failures: int = 0
    verified: bool = False
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    started_at: float = 0.0
    ended_at: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    timeline: list[tuple[int, int, int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
