"""The swarm job's three steps: plan and fan out, run one shard, report.

Steps exchange only plain picklable data (``ShardPlan``, ``ShardResult``, ``SwarmReport``), so
any executor and IO manager that can move pickles between processes works.
"""

import os
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dagster as dg

from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.labels import TRIGGER_TAG, Trigger
from iotswarm_pipelines.metrics.exposition import MetricsError
from iotswarm_pipelines.swarm import data, iot_core, options, planning, sessions, shard_runner
from iotswarm_pipelines.swarm.assets import swarm_report_asset
from iotswarm_pipelines.swarm.config import SwarmConfig
from iotswarm_pipelines.swarm.mqtt.engine import files_needed, raise_open_file_limit
from iotswarm_pipelines.swarm.mqtt.settings import (
    BrokerError,
    MqttConfigError,
    MqttSettings,
    check_broker,
)
from iotswarm_pipelines.swarm.mqtt.types import ShardResult
from iotswarm_pipelines.swarm.options import BrokerOptions, SwarmConfigError
from iotswarm_pipelines.swarm.planning import ShardPlan, SwarmPlan, SwarmSpec
from iotswarm_pipelines.swarm.report import (
    DELIVERY_CHECK,
    SwarmReport,
    delivery,
    gave_up_cause,
    render_markdown,
    render_text,
    summarize,
)
from iotswarm_pipelines.swarm.resources import MqttResource

SWARM_TAG = "iotswarm/swarm"


def prepare(
    config: SwarmConfig,
    cosmos: CosmosSource,
    mqtt: MqttResource,
    name: str,
    warn: Callable[[str], None] = lambda _line: None,
) -> SwarmPlan:
    """Every check that can fail before a device starts; raises one-line errors.

    ``SwarmConfigError``, ``MqttConfigError`` (bad certificate files) or ``BrokerError``.
    AWS IoT Core's limits are errors against IoT Core, and lines passed to ``warn`` otherwise.
    """
    spec = planning.make_spec(config, config.swarm_name or name)
    options.check(mqtt, BrokerOptions, ("brokers", "source_addresses"), MqttConfigError)
    # each broker and source address the shards use, checked once
    endpoints: dict[tuple[str, int, str | None], MqttSettings] = {}
    for shard in range(config.shards):
        settings = mqtt.settings(config, shard)
        endpoints.setdefault((settings.host, settings.port, settings.source_address), settings)
    for settings in endpoints.values():
        settings.validate()
    rows = data.check_source(config.source, spec.table, cosmos)
    saved = (
        sessions.load_session(spec.swarm_name, config.sessions_dir)
        if config.resume_session
        else None
    )
    swarm = planning.plan(spec, rows.sites(), saved)
    _check_iot_core_limits(config, swarm, rows, list(endpoints.values()), warn)
    if not config.dry:
        # Here, not only in the shard: a limit too low for the largest shard is bad input.
        largest = max(len(shard.devices) for shard in swarm.shards)
        raise_open_file_limit(files_needed(largest, config.connections))
        for settings in endpoints.values():
            check_broker(settings, timeout=settings.connect_timeout)
    return swarm


def _check_iot_core_limits(
    config: SwarmConfig,
    swarm: SwarmPlan,
    rows: data.RowSource,
    brokers: list[MqttSettings],
    warn: Callable[[str], None],
) -> None:
    n = config.rows_per_message
    largest = _largest_first_message(swarm, rows, n)
    load = iot_core.SwarmLoad(
        largest_payload_bytes=largest,
        one_row_bytes=_largest_first_message(swarm, rows, 1) if n > 1 else largest,
        rows_per_message=n,
        max_publish_rate=config.max_publish_rate,
        connect_rate=config.connect_rate,
    )
    lines = iot_core.problems(load)
    if lines and any(iot_core.targets_iot_core(b.host, b.alpn) for b in brokers):
        raise SwarmConfigError(lines[0])
    for line in lines:
        warn(f"{line} (a warning: the broker is not AWS IoT Core)")


def _largest_first_message(swarm: SwarmPlan, rows: data.RowSource, rows_per_message: int) -> int:
    """Bytes of the largest first message of one device per site: what IoT Core would see."""
    options, largest, seen = swarm.spec.options, 0, set()
    for shard in swarm.shards:
        for device in shard.devices:
            if device.site_id in seen:
                continue
            seen.add(device.site_id)
            [stream] = data.build_streams(
                [device],
                rows,
                mode=options.mode,
                device_type=options.device_type,
                rows_per_message=rows_per_message,
                positions=shard.positions,
                history_start=swarm.spec.history_start,
            )
            message = stream.next_message()
            largest = max(largest, len(message.payload) if message else 0)
    return largest


@dg.op(
    out={"shards": dg.DynamicOut(ShardPlan), "spec": dg.Out(SwarmSpec)},
    description="Check the options, source and broker; plan devices; one output per shard.",
)
def plan_swarm(
    context: dg.OpExecutionContext,
    config: SwarmConfig,
    cosmos: dg.ResourceParam[CosmosSource],
    mqtt: MqttResource,
) -> Iterator[dg.Output | dg.DynamicOutput]:
    # iot-swarm ran the same checks and printed their warnings before it launched the run: in
    # its log they are kept at info level, so the terminal does not show each one twice.
    from_cli = context.run.tags.get(TRIGGER_TAG) == Trigger.CLI
    warn = context.log.info if from_cli else context.log.warning
    try:
        swarm = prepare(config, cosmos, mqtt, f"swarm-{context.run_id[:8]}", warn)
    except (SwarmConfigError, MqttConfigError, BrokerError) as exc:
        raise dg.Failure(description=str(exc)) from None
    _check_shards_run_together(context, len(swarm.shards), swarm.spec.schedule.max_cycles)
    name = swarm.spec.swarm_name
    if context.run.tags.get(SWARM_TAG) != name:
        context.instance.add_run_tags(context.run_id, {SWARM_TAG: name})
    context.log.info(
        f"swarm {name}: {swarm.devices} devices from {len(swarm.sites)} sites in "
        f"{len(swarm.shards)} shard(s), mode {swarm.spec.options.mode}, {swarm.resumed} resumed"
    )
    yield dg.Output(
        swarm.spec,
        "spec",
        metadata={"devices": swarm.devices, "sites": len(swarm.sites), "shards": len(swarm.shards)},
    )
    for shard in swarm.shards:
        yield dg.DynamicOutput(shard, output_name="shards", mapping_key=f"shard_{shard.shard}")


def concurrent_steps(run_config: Mapping[str, Any]) -> int | None:
    """How many steps the run's default (multi-or-in-process) executor runs at once.

    None for any other executor (Celery, Kubernetes, ...), which schedules steps its own way.
    """
    config = (run_config.get("execution") or {}).get("config") or {}
    if "in_process" in config:
        return 1
    if config and "multiprocess" not in config:
        return None
    multiprocess = config.get("multiprocess") or {}
    return multiprocess.get("max_concurrent") or os.cpu_count() or 1


def _check_shards_run_together(context: dg.OpExecutionContext, shards: int, max_cycles: int):
    """Shards beyond the executor's limit wait for a free slot: forever, if shards never end."""
    limit = concurrent_steps(context.run_config)
    if limit is None or shards < limit:  # the plan step itself still holds one slot
        return
    advice = (
        f"{shards} shards need {shards + 1} concurrent steps but the executor allows {limit}: "
        f"set execution.config.multiprocess.max_concurrent to {shards + 1} or more"
    )
    if max_cycles == 0:
        raise dg.Failure(description=f"{advice} (with max_cycles 0 the rest would never start)")
    context.log.warning(f"{advice}; until then shards run in waves")


@dg.op(description="Publish one shard's devices in this process and account for every message.")
def run_shard(
    context: dg.OpExecutionContext,
    cosmos: dg.ResourceParam[CosmosSource],
    mqtt: MqttResource,
    shard: ShardPlan,
) -> dg.Output[ShardResult]:
    spec, options = shard.spec, shard.spec.options
    settings = mqtt.settings(options, shard.shard)
    try:
        outcome = shard_runner.run_planned_shard(
            shard,
            data.open_rows(options.source, spec.table, cosmos),
            settings,
            log=context.log.info,
            interrupts=(dg.DagsterExecutionInterruptedError, KeyboardInterrupt),
        )
    except (MqttConfigError, BrokerError) as error:
        raise dg.Failure(description=f"shard {shard.shard}: {error}") from None
    except MetricsError as error:  # names the shard already
        raise dg.Failure(description=str(error)) from None
    summary = summarize([outcome.result])
    context.log.info(
        ("partial report after termination\n" if outcome.interrupted else "")
        + render_text(summary, f"shard {shard.shard}")
    )
    where = {**_executed_by(), "source_address": settings.source_address or ""}
    return dg.Output(outcome.result, metadata={**summary.metadata(), **where})


def _executed_by() -> dict[str, str | int]:
    """Where the shard ran: operators match it to a machine and a process on any executor
    (and, with ``source_address``, to the local address its connections came from)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


@dg.op(description="Fold the shards' results into the swarm's report and its saved session.")
def swarm_report(
    context: dg.OpExecutionContext, spec: SwarmSpec, results: list[ShardResult]
) -> dg.Output[SwarmReport]:
    report = summarize(sorted(results, key=lambda r: r.shard))
    sessions.consolidate(spec.swarm_name, spec.options.sessions_dir)
    text = render_text(report, spec.swarm_name)
    context.log.info(text)
    document = {"swarm": spec.swarm_name, "run_id": context.run_id, **report.metadata()}
    saved = sessions.save_report(
        spec.swarm_name, {**document, "text": text}, spec.options.sessions_dir
    )
    metadata = {
        **report.metadata(),
        "qos": spec.options.qos,
        "swarm": spec.swarm_name,
        "report_saved": dg.MetadataValue.path(saved),
        "summary": dg.MetadataValue.md(render_markdown(report, spec.swarm_name)),
    }
    # A materialization of the declared report asset, so the UI plots the numbers across runs.
    context.log_event(dg.AssetMaterialization(asset_key=swarm_report_asset.key, metadata=metadata))
    lost = report.lost if report.verified else None
    passed, verdict = delivery(spec.options.qos, report.failed, lost)
    counts = {
        "qos": spec.options.qos,
        "failed": report.failed,
        **({} if lost is None else {"lost": lost}),
    }
    # Dagster records an AssetCheckEvaluation logged by an op, though log_event's annotation
    # does not list it; an op cannot yield one as an asset can.
    context.log_event(
        dg.AssetCheckEvaluation(  # type: ignore[arg-type]
            asset_key=swarm_report_asset.key,
            check_name=DELIVERY_CHECK,
            passed=passed,
            description=verdict,
            metadata=counts,
        )
    )
    if report.gave_up:  # the report is kept above; the run still fails, naming the cause
        raise dg.Failure(description=f"{gave_up_cause(report)}\n{text}", metadata=report.metadata())
    return dg.Output(report, metadata=metadata)
