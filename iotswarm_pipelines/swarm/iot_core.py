"""AWS IoT Core's documented limits, and which of a swarm's choices would break them.

The team's target broker is IoT Core, which drops what breaks its limits (an oversized
message, a connection publishing too fast) instead of refusing the swarm up front. So the swarm
checks them before any device starts: against IoT Core each problem is bad input (one line,
exit 2); against another broker each is a warning, since a test broker may take more.

Pure rules: no I/O, no Dagster. Client ID and topic limits are also MQTT-level rules that every
device ID and topic must meet, so ``devices`` enforces them for any broker with these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

ALPN = "x-amzn-mqtt-ca"
HOST_SUFFIX = ".amazonaws.com"
MAX_PAYLOAD_BYTES = 128 * 1024
MAX_CLIENT_ID_BYTES = 128
MAX_TOPIC_BYTES = 256
MAX_TOPIC_SLASHES = 7
MAX_PUBLISHES_PER_SECOND = 100  # per connection
MAX_CONNECTS_PER_SECOND = 500  # per account (the default quota)


@dataclass(frozen=True)
class SwarmLoad:
    """What the swarm would do, as the limits see it."""

    largest_payload_bytes: int  # of the messages measured before the start
    one_row_bytes: int  # the same messages with one row each: what a message costs regardless
    rows_per_message: int
    max_publish_rate: float  # per connection; 0 = no limit
    connect_rate: float  # per second; 0 = no limit


def targets_iot_core(host: str, alpn: tuple[str, ...] | list[str]) -> bool:
    """An IoT Core endpoint (``…-ats.iot.<region>.amazonaws.com``) or its MQTT-on-443 ALPN."""
    return host.lower().rstrip(".").endswith(HOST_SUFFIX) or ALPN in alpn


def problems(load: SwarmLoad) -> list[str]:
    """One line per limit the swarm would break, saying what to change."""
    found = []
    if load.largest_payload_bytes > MAX_PAYLOAD_BYTES:
        found.append(_payload_problem(load))
    for name, rate, limit, unit in (
        ("max_publish_rate", load.max_publish_rate, MAX_PUBLISHES_PER_SECOND, "per connection"),
        ("connect_rate", load.connect_rate, MAX_CONNECTS_PER_SECOND, "per account"),
    ):
        if not rate or rate > limit:
            shown = "0 (no limit)" if not rate else f"{rate:g}"
            found.append(
                f"{name} {shown} exceeds AWS IoT Core's {limit} per second {unit}: "
                f"set {name} to {limit} or less"
            )
    return found


def _payload_problem(load: SwarmLoad) -> str:
    """The line for an oversized message, with the most rows that fit: a CR1000X message is a
    fixed head (the field definitions, about 14 KB for SOILMET) plus about 1 KB per row."""
    advice = "device_type basic sends a smaller message per row"
    if load.rows_per_message > 1:
        per_row = (load.largest_payload_bytes - load.one_row_bytes) / (load.rows_per_message - 1)
        head = load.one_row_bytes - per_row
        fits = int((MAX_PAYLOAD_BYTES - head) // per_row) if per_row > 0 else 1
        if fits >= 1:
            advice = f"use rows_per_message {fits} or fewer"
    return (
        f"a message of {load.rows_per_message} row(s) is {load.largest_payload_bytes:,} bytes, "
        f"over AWS IoT Core's {MAX_PAYLOAD_BYTES:,}-byte payload limit: {advice}"
    )
