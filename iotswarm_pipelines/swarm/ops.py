"""The swarm job's three steps: plan and fan out, run one shard, report.

Steps exchange only plain picklable data (``ShardPlan``, ``ShardResult``, ``SwarmReport``), so
any executor and IO manager that can move pickles between processes works.
"""

import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.swarm import data, planning, sessions
from iotswarm_pipelines.swarm.assets import swarm_report_asset
from iotswarm_pipelines.swarm.config import SwarmConfig
from iotswarm_pipelines.swarm.mqtt.engine import run_shard as run_engine
from iotswarm_pipelines.swarm.mqtt.settings import BrokerError, MqttConfigError, check_broker
from iotswarm_pipelines.swarm.mqtt.types import ShardResult
from iotswarm_pipelines.swarm.options import SwarmConfigError
from iotswarm_pipelines.swarm.planning import ShardPlan, SwarmPlan, SwarmSpec
from iotswarm_pipelines.swarm.report import (
    DELIVERY_CHECK,
    SwarmReport,
    delivery,
    render_markdown,
    render_text,
    summarize,
)
from iotswarm_pipelines.swarm.resources import MqttResource

SWARM_TAG = "iotswarm/swarm"


def prepare(config: SwarmConfig, cosmos: CosmosSource, mqtt: MqttResource, name: str) -> SwarmPlan:
    """Every check that can fail before a device starts; raises one-line errors.

    ``SwarmConfigError``, ``MqttConfigError`` (bad certificate files) or ``BrokerError``.
    """
    planning.check_config(config)
    settings = mqtt.settings(config)
    settings.validate()
    rows = data.check_source(config.source, catalogue.get_table(config.table).name, cosmos)
    name = config.swarm_name or name
    saved = sessions.load_session(name, config.sessions_dir) if config.resume_session else None
    swarm = planning.plan(config, name, rows.sites(), saved)
    if not config.dry:
        check_broker(settings, timeout=settings.connect_timeout)
    return swarm


@dg.op(
    out={"shards": dg.DynamicOut(ShardPlan), "spec": dg.Out(SwarmSpec)},
    description="Check the options, source and broker; plan devices; one output per shard.",
)
def plan_swarm(
    context: dg.OpExecutionContext, config: SwarmConfig, cosmos: CosmosSource, mqtt: MqttResource
) -> Iterator[dg.Output | dg.DynamicOutput]:
    try:
        swarm = prepare(config, cosmos, mqtt, f"swarm-{context.run_id[:8]}")
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


def concurrent_steps(run_config: dict) -> int | None:
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


def _progress_line(result: ShardResult) -> str:
    seconds = max(time.time() - result.started_at, 1e-9)
    line = (
        f"shard {result.shard}: sent {result.sent} ({result.sent / seconds:.1f}/s), "
        f"acknowledged {result.acknowledged}, failed {result.failed}, skipped {result.skipped}"
    )
    if result.verified:
        line += f", delivered {result.delivered}, lost so far {result.lost}"
    return line


@dg.op(description="Publish one shard's devices in this process and account for every message.")
def run_shard(
    context: dg.OpExecutionContext, cosmos: CosmosSource, mqtt: MqttResource, shard: ShardPlan
) -> dg.Output[ShardResult]:
    spec, options = shard.spec, shard.spec.options
    rows = data.open_rows(options.source, spec.table, cosmos)
    streams = data.build_streams(
        shard.devices,
        rows,
        mode=options.mode,
        device_type=options.device_type,
        rows_per_message=options.rows_per_message,
        sleep_time=options.sleep_time,
        speed=options.speed,
        positions=shard.positions,
        history_start=spec.history_start,
    )
    settings = mqtt.settings(options)

    # Periodic saves are written by another thread: the engine's loop (which calls
    # on_progress) only copies the positions, so 20,000 devices do not stall publishing.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swarm-session")
    saving: list[Future] = []

    def save_positions(background: bool = False) -> None:
        if background and saving and not saving[-1].done():
            return  # the previous save is still being written; the next interval catches up
        positions = {s.device_id: s.position for s in streams}
        args = (
            spec.swarm_name,
            shard.shard,
            spec.table,
            options.mode,
            positions,
            options.sessions_dir,
        )
        saving.append(writer.submit(sessions.save_shard, *args))
        if not background:
            saving[-1].result()

    def on_progress(result: ShardResult) -> None:
        context.log.info(_progress_line(result))
        save_positions(background=True)

    stop = threading.Event()
    stop_file = Path(options.stop_file) if options.stop_file else None

    def should_stop() -> bool:
        return stop.is_set() or (stop_file is not None and stop_file.exists())

    outcome: dict[str, ShardResult | BaseException] = {}

    def work() -> None:
        try:
            outcome["result"] = run_engine(
                shard.shard,
                streams,
                settings,
                spec.schedule,
                connections=options.connections,  # type: ignore[arg-type]
                dry=options.dry,
                verify=options.verify,
                should_stop=should_stop,
                on_progress=on_progress,
                progress_interval=options.progress_interval,
            )
        except BaseException as exc:  # handed to the step's thread, which raises it
            outcome["error"] = exc
        finally:
            done.set()

    # The engine runs in a worker thread so that the termination of the run (an exception in
    # this, the main, thread) can ask it to stop and still collect its partial result.
    # An Event, not Thread.join: a join interrupted by a signal can leave is_alive() wrong.
    done = threading.Event()
    worker = threading.Thread(target=work, name=f"swarm-shard-{shard.shard}", daemon=True)
    worker.start()
    interrupted = False
    while not done.is_set():
        try:
            done.wait(0.5)
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            interrupted = True
            # Info, not a warning: a stop asked for is no fault, and iot-swarm's terminal shows
            # warnings, which would be drawn through the middle of its progress bar.
            context.log.info(f"shard {shard.shard}: run terminated, stopping the devices")
            stop.set()
    save_positions()
    writer.shutdown()
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, MqttConfigError | BrokerError):
            raise dg.Failure(description=f"shard {shard.shard}: {error}") from None
        raise error  # type: ignore[misc]
    result = outcome["result"]
    assert isinstance(result, ShardResult)
    summary = summarize([result])
    context.log.info(
        ("partial report after termination\n" if interrupted else "")
        + render_text(summary, f"shard {shard.shard}")
    )
    return dg.Output(result, metadata={**summary.metadata(), **_executed_by()})


def _executed_by() -> dict[str, str | int]:
    """Where the shard ran: operators match it to a machine and a process on any executor."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


@dg.op(description="Fold the shards' results into the swarm's report and its saved session.")
def swarm_report(
    context: dg.OpExecutionContext, spec: SwarmSpec, results: list[ShardResult]
) -> dg.Output[SwarmReport]:
    report = summarize(sorted(results, key=lambda r: r.shard))
    sessions.consolidate(spec.swarm_name, spec.options.sessions_dir)
    text = render_text(report, spec.swarm_name)
    context.log.info(text)
    metadata = {
        **report.metadata(),
        "qos": spec.options.qos,
        "swarm": spec.swarm_name,
        "summary": dg.MetadataValue.md(render_markdown(report, spec.swarm_name)),
    }
    # A materialization of the declared report asset, so the UI plots the numbers across runs.
    context.log_event(dg.AssetMaterialization(asset_key=swarm_report_asset.key, metadata=metadata))
    lost = report.lost if report.verified else None
    passed, text = delivery(spec.options.qos, report.failed, lost)
    counts = {
        "qos": spec.options.qos,
        "failed": report.failed,
        **({} if lost is None else {"lost": lost}),
    }
    context.log_event(
        dg.AssetCheckEvaluation(
            asset_key=swarm_report_asset.key,
            check_name=DELIVERY_CHECK,
            passed=passed,
            description=text,
            metadata=counts,
        )
    )
    return dg.Output(report, metadata=metadata)
