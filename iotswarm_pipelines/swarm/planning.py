"""The swarm's plan, made before any device starts: checked options, sites, devices, shards.

Pure rules: no Dagster, no MQTT engine, no I/O (the caller reads the source's sites and a
saved session). The job's first step and ``iot-swarm`` both plan through here, so bad input
gives the same one-line ``SwarmConfigError`` in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from iotswarm_pipelines.clock import naive_utc
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.metrics.exposition import MetricsError, check_pushgateway
from iotswarm_pipelines.swarm import devices as dv
from iotswarm_pipelines.swarm import options, scenario, sessions
from iotswarm_pipelines.swarm.devices import DevicePlan
from iotswarm_pipelines.swarm.mqtt.types import Scenario, Schedule
from iotswarm_pipelines.swarm.options import COSMOS_SOURCE, SwarmConfigError, SwarmOptions
from iotswarm_pipelines.swarm.sessions import DevicePosition


@dataclass(frozen=True)
class SwarmSpec:
    """What every shard needs: the checked options and the names and times resolved from them.

    Plain data, picklable across step processes.
    """

    options: SwarmOptions
    swarm_name: str
    table: catalogue.Table
    history_start: datetime | None
    schedule: Schedule


@dataclass(frozen=True)
class ShardPlan:
    shard: int
    spec: SwarmSpec
    devices: list[DevicePlan]
    positions: dict[str, DevicePosition] = field(default_factory=dict)
    scenario: Scenario = field(default_factory=Scenario)


@dataclass(frozen=True)
class SwarmPlan:
    spec: SwarmSpec
    sites: list[str]
    shards: list[ShardPlan]
    resumed: int  # devices that continue a saved position

    @property
    def devices(self) -> int:
        return sum(len(s.devices) for s in self.shards)


def check_config(config: SwarmOptions) -> catalogue.Table:
    """Raise ``SwarmConfigError`` (one line naming the option) for options that cannot work.

    Returns the run's table, the one the options name (the model accepts only the catalogue's
    names; command lines look the older spellings up before they build it): everything below
    is given this ``Table``.
    """
    options.check(config, SwarmOptions)
    if config.mode == "latest" and config.rows_per_message != 1:
        raise SwarmConfigError(
            "rows_per_message applies to loop and replay; latest sends each site's newest row"
        )
    if config.client_id is not None and (config.connections != "shared" or config.shards != 1):
        raise SwarmConfigError(
            "client_id names the one shared connection: use it with connections shared and "
            "shards 1 (two connections with one client ID disconnect each other)"
        )
    if config.resume_session and not config.swarm_name:
        raise SwarmConfigError("resume_session needs swarm_name: the session to continue")
    if config.swarm_name:
        sessions.check_name(config.swarm_name)
    table = catalogue.TABLES[config.table]
    for site in config.sites:
        try:
            catalogue.get_site(site)
        except catalogue.UnknownSiteError as exc:
            raise SwarmConfigError(str(exc)) from None
    history_start(config)
    _check_metrics(config)
    scenario.check(config, table)
    dv.clone_counts(["ALIC1"], config.devices, config.per_site)  # devices/per_site rules
    return table


def _check_metrics(config: SwarmOptions) -> None:
    last = config.metrics_port + config.shards - 1
    if config.metrics_port and last > 65535:
        raise SwarmConfigError(
            f"metrics_port {config.metrics_port} with {config.shards} shards needs ports up to "
            f"{last}: choose a port at most {65536 - config.shards}"
        )
    if config.pushgateway:
        try:
            check_pushgateway(config.pushgateway)
        except MetricsError as exc:
            raise SwarmConfigError(str(exc)) from None


def history_start(config: SwarmOptions) -> datetime | None:
    """Naive UTC, as every ``DATE_TIME`` of the sources is: an offset is converted to UTC, so
    the machine's time zone never changes which rows are sent."""
    if not config.history_start:
        return None
    try:
        start = datetime.fromisoformat(config.history_start)
    except ValueError:
        raise SwarmConfigError(
            f"history_start {config.history_start!r} is not an ISO time such as 2024-06-01T00:00"
        ) from None
    return naive_utc(start)


def resolve_sites(spec: SwarmSpec, available: Sequence[str]) -> list[str]:
    """The sites the swarm uses, of those ``available`` in the source (a bad choice: one line)."""
    config, table = spec.options, spec.table.name
    where = "the COSMOS source" if config.source == COSMOS_SOURCE else config.source
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
        sites = list(available)
    if not sites:
        raise SwarmConfigError(f"{table} of {where} has no rows: nothing for the devices to send")
    return sites[: config.max_sites] if config.max_sites else sites


def make_spec(config: SwarmOptions, swarm_name: str) -> SwarmSpec:
    """The checked options with the table they name (``SwarmConfigError`` on bad input)."""
    table = check_config(config)
    return SwarmSpec(
        options=SwarmOptions.model_validate(config.model_dump()),
        swarm_name=swarm_name,
        table=table,
        history_start=history_start(config),
        schedule=Schedule(
            max_cycles=config.max_cycles,
            delay_start=config.sleep_time if config.delay_start else 0.0,
            no_send_probability=config.no_send_probability,
            seed=config.seed,
        ),
    )


def plan(
    spec: SwarmSpec, available_sites: Sequence[str], saved: sessions.Session | None = None
) -> SwarmPlan:
    """Sites, devices, shards and the positions of a ``saved`` session to resume.

    Raises ``SwarmConfigError`` on bad input. The caller makes the spec (``make_spec``, which
    checks the options) and reads the source's sites and the saved session
    (``resume_session``), so planning itself does no I/O.
    """
    config = spec.options
    sites = resolve_sites(spec, available_sites)
    planned = dv.plan_devices(
        sites,
        devices=config.devices,
        per_site=config.per_site,
        template=config.device_id_template,
        prefix=config.mqtt_prefix,
        suffix=config.mqtt_suffix,
    )
    positions: dict[str, DevicePosition] = {}
    if config.resume_session and saved is not None:
        # An empty session (``iot-swarm sessions init``) has no table yet: any run may start it.
        if saved.table and (saved.table, saved.mode) != (spec.table.name, config.mode):
            raise SwarmConfigError(
                f"session {spec.swarm_name!r} was saved for {saved.table} in {saved.mode} "
                f"mode, not {spec.table.name} in {config.mode} mode: use the same table and mode "
                "or another swarm_name"
            )
        positions = saved.positions
    groups = dv.split_shards(planned, config.shards)
    scenarios = scenario.for_shards(config, spec.table, [[d.device_id for d in g] for g in groups])
    shards = [
        ShardPlan(
            shard=k,
            spec=spec,
            devices=group,
            positions={
                d.device_id: positions[d.device_id] for d in group if d.device_id in positions
            },
            scenario=scenarios[k],
        )
        for k, group in enumerate(groups)
    ]
    resumed = sum(len(s.positions) for s in shards)
    return SwarmPlan(spec=spec, sites=sites, shards=shards, resumed=resumed)
