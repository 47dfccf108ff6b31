"""The engine's value types: what a device stream hands it, how often, and what it reports.

Apart from the engine (as paho keeps its enums and reason codes apart from its client), so
planning, data and reporting use them without importing the MQTT machinery.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Message:
    """One publish: its bytes, then how long the device waits before its next; ``mark`` is the
    stream's own note of where it then stood, handed back once the message is acknowledged."""

    payload: bytes
    wait_after: float
    mark: object = None


class DeviceStream(Protocol):
    """A device as the engine sees it: where it publishes and its next message (None: done)."""

    device_id: str
    topic: str

    def next_message(self, rows: int | None = None) -> Message | None:
        """The next message; ``rows`` asks for that many rows in it (a backlog upload)."""
        ...


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
    interrupted: str = ""  # what stopped it before its schedule's end: SIGINT, SIGTERM, ...
    resent: int = 0  # rows sent again on resuming: a dead run had them unacknowledged
    started_at: float = 0.0
    ended_at: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    timeline: list[tuple[int, int, int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    latency_times: list[float] = field(default_factory=list)  # arrival time of each latency
    phase_marks: dict[str, float] = field(default_factory=dict)  # scenario phase boundaries
    phase_messages: dict[str, int] = field(default_factory=dict)
    phase_reconnects: dict[str, int] = field(default_factory=dict)
    backlog_messages: int = 0
    control: dict[str, CommandCounts] = field(default_factory=dict)  # by command kind
    state_transitions: dict[str, int] = field(default_factory=dict)  # state messages by state
    control_faults: dict[str, int] = field(default_factory=dict)  # faults applied, by kind


@dataclass
class CommandCounts:
    """One command kind on one shard: received, answered (its last message out), answered
    with an error, and each answer's latency from receipt (ms)."""

    received: int = 0
    answered: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def copy(self) -> CommandCounts:
        return CommandCounts(self.received, self.answered, self.errors, list(self.latencies_ms))


@dataclass(frozen=True)
class ControlSettings:
    """The command-and-control API as a shard's engine runs it (see ``swarm.control``).

    Shares are percentages of devices; a late device answers every command after a delay drawn
    from a log-normal distribution with median ``late_median_s`` and p99 ``late_p99_s``.
    """

    group_id: str = "cs/v2"
    reboot_seconds: float = 5.0
    tables: tuple[str, ...] = ()
    ignore_share: float = 0.0
    late_share: float = 0.0
    late_median_s: float = 2.0
    late_p99_s: float = 10.0
    download_fail_share: float = 0.0
    download_timeout_s: float = 10.0


@dataclass
class LiveCounts:
    """A running shard's figures, handed to an observer (live metrics) on the engine's thread.

    ``result`` is the shard's live books, to be read and not kept; the latency lists hold the
    seconds measured since the previous call (publish to PUBACK, publish to the verifier).
    """

    result: ShardResult
    phase: str
    connections_up: int
    connects: int
    delivered: int = 0
    duplicated: int = 0
    publish_latencies: list[float] = field(default_factory=list)
    delivery_latencies: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    """A shard's scenario phases in the engine's terms: device cycles and real seconds.

    Outage: each device of ``outage_devices`` spends its cycles ``outage_start_cycle`` to
    ``outage_start_cycle + outage_cycles - 1`` offline, owing one message per cycle (its
    backlog); ``cadence_seconds`` is the real time of one cycle. Ramp: a device joins (connects,
    then sends its first message) ``join_after[device_id]`` seconds after the shard starts.
    """

    outage_devices: frozenset[str] = frozenset()
    outage_start_cycle: int = 0
    outage_cycles: int = 0
    cadence_seconds: float = 0.0
    backlog_batch: int = 1  # backlog cycles joined into one message
    rows_per_message: int = 1  # rows of one cycle's message
    join_after: Mapping[str, float] = field(default_factory=dict)


PHASES = ("ramp", "steady", "outage", "catch-up", "after")
"""Scenario phases in their order; a run without a scenario is one ``steady`` phase."""


def phase_of(marks: Collection[str], ramping: bool) -> str:
    """The phase a shard is in, given the boundary marks passed so far: ``outage_start`` (the
    first device drops), ``outage_end`` (the first comes back), ``drained`` (every backlog
    acknowledged) and, while a ramp's devices are still joining, ``ramp``."""
    if "outage_end" in marks:
        return "after" if "drained" in marks else "catch-up"
    if "outage_start" in marks:
        return "outage"
    return "ramp" if ramping else "steady"
