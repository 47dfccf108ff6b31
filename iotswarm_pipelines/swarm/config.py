"""The swarm's options, their checks, and the plan made from them before any device starts.

``SwarmConfig`` is the job's typed config (the UI launchpad shows it) and what the CLI fills in.
``check_config`` and ``prepare`` are shared by the job's first step and the CLI, so bad input
gives the same one-line message in both, before any device connects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import SourceError
from iotswarm_pipelines.swarm import devices as dv
from iotswarm_pipelines.swarm import sessions
from iotswarm_pipelines.swarm.data import DEVICE_TYPES, MODES, CosmosRows, CsvRows, RowSource
from iotswarm_pipelines.swarm.devices import DevicePlan, SwarmConfigError
from iotswarm_pipelines.swarm.mqtt.engine import Schedule
from iotswarm_pipelines.swarm.sessions import DevicePosition

COSMOS_SOURCE = "cosmos"
CONNECTIONS = ("per_device", "shared")
PROTOCOLS = ("3.1.1", "5")


class SwarmConfig(dg.Config):
    """Options of one swarm run; see the README's "MQTT device swarm" section."""

    sites: list[str] = Field(default=[], description="Site IDs; empty = all sites of the table.")
    max_sites: int | None = Field(default=None, description="Use only the first N sites.")
    devices: int | None = Field(default=None, description="Total devices cloned from the sites.")
    per_site: int | None = Field(default=None, description="Devices cloned per site.")
    device_id_template: str | None = Field(
        default=None,
        description="Device IDs: {site}, {n} (clone number from 1), {i} (index from 0). "
        "Default {site} for one device per site, {site}-{n:05d} for clones.",
    )
    table: str = Field(default=catalogue.SOILMET_30MIN.name, description="COSMOS table.")
    source: str = Field(
        default=COSMOS_SOURCE,
        description="'cosmos' (the cosmos resource) or the path of a CSV export of the table.",
    )
    mode: str = Field(default="latest", description="latest | loop | replay")
    speed: float = Field(default=48.0, description="replay: history seconds per real second.")
    history_start: str | None = Field(
        default=None, description="loop/replay: start with rows after this ISO time."
    )
    rows_per_message: int = Field(default=1, description="loop/replay: rows per message.")
    device_type: str = Field(default="cr1000x", description="cr1000x | basic")
    sleep_time: float = Field(default=60.0, description="Seconds between a device's sends.")
    max_cycles: int = Field(default=1, description="Sends per device; 0 = until terminated.")
    delay_start: bool = Field(
        default=False, description="Delay each device's first send by up to sleep_time."
    )
    no_send_probability: float = Field(default=0.0, description="Percent of cycles skipped.")
    mqtt_prefix: str | None = Field(default=None, description="Topic levels before the device.")
    mqtt_suffix: str | None = Field(default=None, description="Topic levels after the device.")
    qos: int = Field(default=1, description="0 or 1")
    protocol: str = Field(default="3.1.1", description="3.1.1 or 5")
    connections: str = Field(default="per_device", description="per_device | shared")
    shards: int = Field(default=1, description="Shards, each run by its own step process.")
    dry: bool = Field(default=False, description="Build messages, send nothing.")
    verify: bool = Field(default=False, description="Subscribe and match what arrives.")
    swarm_name: str | None = Field(
        default=None, description="Names the session (positions saved); default from the run ID."
    )
    resume_session: bool = Field(
        default=False, description="Continue the session named swarm_name where it stopped."
    )
    sessions_dir: str | None = Field(
        default=None,
        description="Session folder or s3://bucket/prefix (sessions and reports); default "
        "$IOTSWARM_SESSIONS_URI, else <IOTSWARM_DATA_DIR>/swarm_sessions.",
    )
    connect_rate: float = Field(default=200.0, description="New connections per second.")
    max_publish_rate: float = Field(
        default=100.0, description="Publishes per second per connection (IoT Core: 100)."
    )
    progress_interval: float = Field(default=5.0, description="Seconds between progress logs.")
    stop_file: str | None = Field(
        default=None, description="Shards stop cleanly once this file exists (used by iot-swarm)."
    )
    seed: int = Field(default=0, description="Seed of delays and skipped cycles.")


@dataclass(frozen=True)
class SwarmSpec:
    """The checked options every shard needs: plain data, picklable across step processes."""

    swarm_name: str
    table: str
    source: str
    mode: str
    device_type: str
    rows_per_message: int
    sleep_time: float
    speed: float
    history_start: datetime | None
    schedule: Schedule
    qos: int
    protocol: str
    connections: str
    dry: bool
    verify: bool
    connect_rate: float
    max_publish_rate: float
    progress_interval: float
    sessions_dir: str | None
    stop_file: str | None = None


@dataclass(frozen=True)
class ShardPlan:
    shard: int
    spec: SwarmSpec
    devices: list[DevicePlan]
    positions: dict[str, DevicePosition] = field(default_factory=dict)


@dataclass(frozen=True)
class SwarmPlan:
    spec: SwarmSpec
    sites: list[str]
    shards: list[ShardPlan]
    resumed: int  # devices that continue a saved position

    @property
    def devices(self) -> int:
        return sum(len(s.devices) for s in self.shards)


def _at_least(name: str, value: float | None, low: float) -> None:
    if value is not None and value < low:
        raise SwarmConfigError(f"{name} must be at least {low:g}, got {value:g}")


def check_config(config: SwarmConfig) -> None:
    """Raise ``SwarmConfigError`` (one line naming the option) for options that cannot work."""
    for name, low in (
        ("sleep_time", 0),
        ("max_cycles", 0),
        ("max_sites", 1),
        ("rows_per_message", 1),
        ("shards", 1),
        ("connect_rate", 0),
        ("max_publish_rate", 0),
        ("progress_interval", 0.1),
    ):
        _at_least(name, getattr(config, name), low)
    if config.speed <= 0:
        raise SwarmConfigError(f"speed must be greater than 0, got {config.speed:g}")
    if not 0 <= config.no_send_probability <= 100:
        raise SwarmConfigError(
            f"no_send_probability is a percentage: 0 to 100, got {config.no_send_probability:g}"
        )
    for name, value, allowed in (
        ("mode", config.mode, MODES),
        ("device_type", config.device_type, DEVICE_TYPES),
        ("connections", config.connections, CONNECTIONS),
        ("protocol", config.protocol, PROTOCOLS),
    ):
        if value not in allowed:
            raise SwarmConfigError(f"{name} {value!r} is unknown: use one of {', '.join(allowed)}")
    if config.qos not in (0, 1):
        raise SwarmConfigError(f"qos {config.qos} is not supported: use 0 or 1")
    if config.mode == "latest" and config.rows_per_message != 1:
        raise SwarmConfigError(
            "rows_per_message applies to loop and replay; latest sends each site's newest row"
        )
    if config.resume_session and not config.swarm_name:
        raise SwarmConfigError("resume_session needs swarm_name: the session to continue")
    if config.swarm_name:
        sessions.check_name(config.swarm_name)
    try:
        catalogue.get_table(config.table)
    except catalogue.UnknownTableError as exc:
        raise SwarmConfigError(str(exc)) from None
    for site in config.sites:
        try:
            catalogue.get_site(site)
        except catalogue.UnknownSiteError as exc:
            raise SwarmConfigError(str(exc)) from None
    _history_start(config)
    dv.clone_counts(["ALIC1"], config.devices, config.per_site)  # devices/per_site rules
    if config.source != COSMOS_SOURCE and not Path(config.source).is_file():
        raise SwarmConfigError(
            f"source {config.source!r} is neither 'cosmos' nor a readable CSV file"
        )


def _history_start(config: SwarmConfig) -> datetime | None:
    if not config.history_start:
        return None
    try:
        start = datetime.fromisoformat(config.history_start)
    except ValueError:
        raise SwarmConfigError(
            f"history_start {config.history_start!r} is not an ISO time such as 2024-06-01T00:00"
        ) from None
    return start.replace(tzinfo=None) if start.tzinfo is None else start.astimezone(None)


def open_rows(spec_source: str, table: str, cosmos: Any) -> RowSource:
    """The rows the devices send: the COSMOS source resource or a CSV export."""
    if spec_source == COSMOS_SOURCE:
        return CosmosRows(cosmos, table)
    return CsvRows(spec_source, table)


def resolve_sites(config: SwarmConfig, rows: RowSource) -> list[str]:
    available = rows.sites()
    where = "the COSMOS source" if config.source == COSMOS_SOURCE else config.source
    table = catalogue.get_table(config.table).name
    if config.sites:
        wanted = [s.strip().upper() for s in config.sites]
        missing = [s for s in wanted if s not in available]
        if missing:
            raise SwarmConfigError(
                f"site(s) {', '.join(missing)} have no rows in {table} of {where}: "
                f"sites with rows are {', '.join(available[:10]) or 'none'}"
                f"{' ...' if len(available) > 10 else ''}"
            )
        sites = list(dict.fromkeys(wanted))
    else:
        sites = available
    if not sites:
        raise SwarmConfigError(f"{table} of {where} has no rows: nothing for the devices to send")
    return sites[: config.max_sites] if config.max_sites else sites


def make_spec(config: SwarmConfig, swarm_name: str) -> SwarmSpec:
    return SwarmSpec(
        swarm_name=swarm_name,
        table=catalogue.get_table(config.table).name,
        source=config.source,
        mode=config.mode,
        device_type=config.device_type,
        rows_per_message=config.rows_per_message,
        sleep_time=config.sleep_time,
        speed=config.speed,
        history_start=_history_start(config),
        schedule=Schedule(
            max_cycles=config.max_cycles,
            delay_start=config.sleep_time if config.delay_start else 0.0,
            no_send_probability=config.no_send_probability,
            seed=config.seed,
        ),
        qos=config.qos,
        protocol=config.protocol,
        connections=config.connections,
        dry=config.dry,
        verify=config.verify,
        connect_rate=config.connect_rate,
        max_publish_rate=config.max_publish_rate,
        progress_interval=config.progress_interval,
        sessions_dir=config.sessions_dir,
        stop_file=config.stop_file,
    )


def plan(config: SwarmConfig, rows: RowSource, default_name: str) -> SwarmPlan:
    """Sites, devices, shards and saved positions; raises ``SwarmConfigError`` on bad input."""
    check_config(config)
    spec = make_spec(config, config.swarm_name or default_name)
    sites = resolve_sites(config, rows)
    planned = dv.plan_devices(
        sites,
        devices=config.devices,
        per_site=config.per_site,
        template=config.device_id_template,
        prefix=config.mqtt_prefix,
        suffix=config.mqtt_suffix,
    )
    positions: dict[str, DevicePosition] = {}
    if config.resume_session:
        session = sessions.load_session(spec.swarm_name, spec.sessions_dir)
        if session is not None:
            if (session.table, session.mode) != (spec.table, spec.mode):
                raise SwarmConfigError(
                    f"session {spec.swarm_name!r} was saved for {session.table} in {session.mode} "
                    f"mode, not {spec.table} in {spec.mode} mode: use the same table and mode "
                    "or another swarm_name"
                )
            positions = session.positions
    shards = [
        ShardPlan(
            shard=k,
            spec=spec,
            devices=group,
            positions={
                d.device_id: positions[d.device_id] for d in group if d.device_id in positions
            },
        )
        for k, group in enumerate(dv.split_shards(planned, config.shards))
    ]
    resumed = sum(len(s.positions) for s in shards)
    return SwarmPlan(spec=spec, sites=sites, shards=shards, resumed=resumed)


def check_sources(config: SwarmConfig, cosmos: Any) -> RowSource:
    """Open and probe the data source, turning its errors into one ``SwarmConfigError`` line."""
    table = catalogue.get_table(config.table).name
    try:
        if config.source == COSMOS_SOURCE:
            cosmos.check([table])
        return open_rows(config.source, table, cosmos)
    except SourceError as exc:
        raise SwarmConfigError(str(exc).splitlines()[0]) from None


def site_list(values: Sequence[str]) -> list[str]:
    """Sites given as a list or comma-separated strings (the CLI's ``--sites A,B``)."""
    return [s for v in values for s in v.split(",") if s.strip()]
