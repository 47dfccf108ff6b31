"""Scenario phases: an outage with its backlog, and a ramp of devices joining, as plain rules.

The swarm's time model decides what a simulated minute costs in real time: in ``loop`` and
``latest`` mode one cycle of ``sleep_time`` seconds stands for one row of the table (its
cadence: 30 minutes for SOILMET), in ``replay`` mode ``speed`` history seconds pass per real
second. So "an outage of 30 simulated minutes" of a 1-minute table is 30 rows of backlog per
device, and at ``sleep_time`` 0.05 it lasts 1.5 real seconds.

Decisions where the issue is silent:
- The outage counts in the device's own cycles (rows), not wall-clock: each device logs exactly
  ``outage_minutes`` worth of rows offline, also when its sends drift; with ``delay_start`` off
  every device of the outage drops at the same moment (a network-wide outage).
- Which devices: the first ``outage_share`` percent of the swarm's device IDs ordered by a hash
  of (seed, device ID): the same devices on every run with that seed, spread over the sites.
- Outages need ``loop`` mode (the backlog is the rows the history walk would have sent; latest
  has no history, and replay's waits follow the rows) and per-device connections (a shared
  connection carries every device of its shard).
- Ramp join times are spread over the whole swarm (across shards) in device order.

Pure: no Dagster, no MQTT engine, no I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.swarm.mqtt.types import Scenario
from iotswarm_pipelines.swarm.options import SwarmConfigError, SwarmOptions


def minute_seconds(config: SwarmOptions, table: catalogue.Table) -> float:
    """Real seconds of one simulated minute in the run's time model."""
    if config.mode == "replay":
        return 60.0 / config.speed
    return config.sleep_time * 60.0 / table.cadence.total_seconds()


def rows_in(table: catalogue.Table, minutes: float) -> int:
    """Rows of the table logged in ``minutes`` simulated minutes."""
    return round(minutes * 60.0 / table.cadence.total_seconds())


def check(config: SwarmOptions, table: catalogue.Table) -> None:
    """One ``SwarmConfigError`` line for scenario options that cannot work together."""
    cadence = f"{table.cadence.total_seconds() / 60:g} min"
    if config.outage_share or config.outage_minutes:
        if not config.outage_share:
            raise SwarmConfigError(
                "outage_minutes needs outage_share: the percent of devices that go offline"
            )
        if config.mode != "loop":
            raise SwarmConfigError(
                f"outage needs mode loop, not {config.mode}: the backlog is the rows of the "
                "history walk logged while offline"
            )
        if config.connections != "per_device":
            raise SwarmConfigError(
                "outage needs connections per_device: a shared connection carries every "
                "device of its shard, so one device cannot go offline alone"
            )
        if rows_in(table, config.outage_minutes) < 1:
            raise SwarmConfigError(
                f"outage_minutes {config.outage_minutes:g} is shorter than one row of "
                f"{table.name} ({cadence}): give at least {cadence}"
            )
        end = rows_in(table, config.outage_start) + rows_in(table, config.outage_minutes)
        if config.max_cycles and end >= config.max_cycles:
            raise SwarmConfigError(
                f"outage ends after row {end} of each device but max_cycles is "
                f"{config.max_cycles}: raise max_cycles above {end} (or 0) so devices are "
                "live again after it"
            )
    if config.ramp == "none" and config.ramp_minutes:
        raise SwarmConfigError("ramp_minutes needs ramp linear or step: how devices join")
    if config.ramp != "none" and not config.ramp_minutes:
        raise SwarmConfigError(
            f"ramp {config.ramp} needs ramp_minutes > 0: the simulated minutes devices join over"
        )


def outage_devices(config: SwarmOptions, device_ids: Sequence[str]) -> frozenset[str]:
    """The ``outage_share`` percent of the devices that go offline (see the module's notes)."""
    count = round(config.outage_share * len(device_ids) / 100.0)

    def order(device_id: str) -> str:
        return hashlib.sha1(f"{config.seed}:{device_id}".encode()).hexdigest()

    return frozenset(sorted(device_ids, key=order)[:count])


def join_after(
    config: SwarmOptions, table: catalogue.Table, device_ids: Sequence[str]
) -> dict[str, float]:
    """Real seconds after the start at which each device joins; empty without a ramp."""
    if config.ramp == "none":
        return {}
    span = config.ramp_minutes * minute_seconds(config, table)
    total = len(device_ids)
    if config.ramp == "linear":
        return {d: span * i / total for i, d in enumerate(device_ids)}
    steps = config.ramp_steps
    return {d: span * math.floor(i * steps / total) / steps for i, d in enumerate(device_ids)}


def for_shards(
    config: SwarmOptions, table: catalogue.Table, shards: Sequence[Sequence[str]]
) -> list[Scenario]:
    """Each shard's ``Scenario`` from the whole swarm's device IDs, shard by shard."""
    everyone = [d for shard in shards for d in shard]
    offline = outage_devices(config, everyone) if config.outage_share else frozenset()
    joins = join_after(config, table, everyone)
    start, cycles = rows_in(table, config.outage_start), rows_in(table, config.outage_minutes)
    return [
        Scenario(
            outage_devices=offline & set(shard),
            outage_start_cycle=start,
            outage_cycles=cycles if offline else 0,
            cadence_seconds=config.sleep_time,
            backlog_batch=config.backlog_batch,
            rows_per_message=config.rows_per_message,
            join_after={d: joins[d] for d in shard if d in joins},
        )
        for shard in shards
    ]
