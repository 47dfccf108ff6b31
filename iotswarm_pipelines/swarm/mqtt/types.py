"""The engine's value types: what a device stream hands it, how often, and what it reports.

Apart from the engine (as paho keeps its enums and reason codes apart from its client), so
planning, data and reporting use them without importing the MQTT machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Message:
    """One publish: its bytes, then how long the device waits before its next."""

    payload: bytes
    wait_after: float


class DeviceStream(Protocol):
    """A device as the engine sees it: where it publishes and its next message (None: done)."""

    device_id: str
    topic: str

    def next_message(self) -> Message | None: ...


@dataclass(frozen=True)
class Schedule:
    """How often devices send: cycles (0 = until stopped), first delay, skipped percent, seed."""

    max_cycles: int = 1
    delay_start: float = 0.0
    no_send_probability: float = 0.0
    seed: int = 0


@dataclass
class ShardResult:
    """What one shard did: message counts, connect failures, latencies, timeline, first errors."""

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
    unsent: int = 0  # due or planned but never published (a stop, or the broker given up on)
    gave_up: bool = False  # stopped because no broker connection held for give_up_after
    started_at: float = 0.0
    ended_at: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    timeline: list[tuple[int, int, int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
