"""Building and running a swarm from option values, for both ``iot-swarm`` command trees.

``assemble`` turns option values (the flat form's or the old tool's, as ``swarm.options``
names them) into the job's config, run config and broker; ``run_swarm`` checks and plans them,
runs ``swarm_job`` and makes the exit status and the report's text. One shard runs in this
process; more shards run one process each (the multiprocess executor), under a detached child
that ^C and SIGTERM cannot abandon (``_execute_detached``). Runs are recorded in the
``DAGSTER_HOME`` instance when one is set, so the UI of ``make dev`` shows them and the report;
otherwise in a throw-away one.

The command modules import this only once their arguments parsed, so ``--help`` and bad
arguments answer before Dagster and the engine load.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef  # the public API takes no overrides
from sqlalchemy.engine import url as sa_url
from tqdm import tqdm

from iotswarm_pipelines import secret_files, settings
from iotswarm_pipelines.command_line import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    CommandError,
)
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.errors import SourceError
from iotswarm_pipelines.cosmos.resource import CosmosSourceResource
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.errors import first_line
from iotswarm_pipelines.labels import Trigger, trigger_tags
from iotswarm_pipelines.secret_files import SWARM_PASSWORD_ENV, SWARM_SOURCE_URL_ENV
from iotswarm_pipelines.swarm import sessions
from iotswarm_pipelines.swarm.config import SwarmConfig
from iotswarm_pipelines.swarm.jobs import build_swarm_job
from iotswarm_pipelines.swarm.mqtt.settings import BrokerError, MqttConfigError
from iotswarm_pipelines.swarm.ops import SWARM_TAG, prepare
from iotswarm_pipelines.swarm.options import COSMOS_SOURCE, SwarmConfigError
from iotswarm_pipelines.swarm.report import (
    SwarmReport,
    dead_shards_cause,
    render_text,
    summarize,
)
from iotswarm_pipelines.swarm.resources import MqttResource
from iotswarm_pipelines.swarm.terminal_log import terminal_logger

ORPHAN_CHECK_SECONDS = 1.0
FORKSERVER_PRELOAD = "iotswarm_pipelines.swarm.forkserver"
QUIET_INSTANCE = {"telemetry": {"enabled": False}, "python_logs": {"python_log_level": "WARNING"}}

# Resources configured per launch, so child processes rebuild them from the run config alone.
# Shards always run as local processes here, even with IOTSWARM_EXECUTOR=celery in the shell.
cli_swarm_job = build_swarm_job(
    resource_defs={
        "mqtt": MqttResource.configure_at_launch(),
        "cosmos": CosmosSourceResource.configure_at_launch(),
    },
    executor_def=dg.multi_or_in_process_executor,
    logger_defs={"console": terminal_logger},
)


def _source(value: str | None) -> tuple[str, str]:
    """(job ``source`` option, COSMOS URL): a CSV path or a database URL; without ``--source``,
    ``$IOTSWARM_SOURCE_URL`` (so a URL holding a password stays off the command line), else the
    sample database."""
    value = value or secret_files.take_from_environment(SWARM_SOURCE_URL_ENV)
    if value is None:
        return COSMOS_SOURCE, settings.sample_db_url()
    if "://" in value:
        return COSMOS_SOURCE, value
    return str(Path(value).resolve()), settings.sample_db_url()


def _password(password_file: str | None) -> str | None:
    """The broker's password from ``--password-file``, else from ``$IOTSWARM_MQTT_PASSWORD``,
    which leaves this process's environment so that no shard inherits it."""
    from_environment = secret_files.take_from_environment(SWARM_PASSWORD_ENV)
    if not password_file:
        return from_environment
    secret_files.warn_if_open(password_file)
    try:
        return Path(password_file).read_text().strip() or None
    except OSError as exc:
        raise SwarmConfigError(
            f"cannot read --password-file {password_file}: {exc.strerror}"
        ) from None


def _source_config(url: str, schema_name: str | None) -> dict[str, Any]:
    """The ``cosmos`` resource's config: a URL holding a password goes by a private file."""
    secret = sa_url.make_url(url).password is not None
    config: dict[str, Any] = (
        {"url_file": secret_files.handoff.put("source-url", url)} if secret else {"url": url}
    )
    if schema_name:
        config["schema_name"] = schema_name
    return config


def assemble(
    run_values: dict[str, Any],
    broker_values: dict[str, Any],
    *,
    source: str | None,
    password_file: str | None = None,
    log_level: str = "WARNING",
    schema_name: str | None = None,
) -> tuple[SwarmConfig, dict[str, Any], MqttResource]:
    """The job's config, run config and broker from option values (any command tree's)."""
    job_source, url = _source(source)
    if "table" in run_values:  # the older spelling (LEVEL_1_...) too; unknown: one line
        try:
            run_values = {**run_values, "table": catalogue.get_table(run_values["table"]).name}
        except catalogue.UnknownTableError as exc:
            raise SwarmConfigError(str(exc)) from None
    config = SwarmConfig(
        **{
            **run_values,
            "source": job_source,
            "swarm_name": run_values.get("swarm_name") or f"swarm-{uuid.uuid4().hex[:8]}",
        }
    )
    mqtt_config: dict[str, Any] = dict(broker_values)
    password = _password(password_file)
    mqtt = MqttResource(**mqtt_config, password=password)
    if password:  # by a private file: never in the run's stored config or a shard's environment
        mqtt_config["password_file"] = secret_files.handoff.put("mqtt-password", password)
    cosmos_config = _source_config(url, schema_name)
    run_config = {
        "ops": {"plan_swarm": {"config": config.model_dump(mode="json", exclude_none=True)}},
        "resources": {"mqtt": {"config": mqtt_config}, "cosmos": {"config": cosmos_config}},
        "loggers": {"console": {"config": {"log_level": log_level.upper()}}},
    }
    return config, run_config, mqtt


class _Progress:
    """A bar of messages made so far, read from the shards' periodic session saves."""

    def __init__(self, config: SwarmConfig, total: int | None, start_cycles: int):
        self.config = config
        self.start_cycles = start_cycles
        self.stop = threading.Event()
        self.bar = tqdm(total=total, unit="msg", desc="messages", disable=None, file=sys.stderr)
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _poll(self) -> None:
        try:
            session = sessions.load_session(str(self.config.swarm_name), self.config.sessions_dir)
        except SwarmConfigError:
            return  # a file mid-replace; the next poll reads it
        if session is not None:
            made = sum(p.cycles for p in session.positions.values()) - self.start_cycles
            self.bar.update(max(made - self.bar.n, 0))

    def _watch(self) -> None:
        while not self.stop.wait(1.0):
            self._poll()

    def __enter__(self) -> _Progress:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._poll()  # the shards' last saves, written after the previous poll: 100% when done
        self.bar.close()


def run_tags(name: str) -> dict[str, str]:
    """The tags of a swarm run started by ``iot-swarm``: its session name and the trigger."""
    return {SWARM_TAG: name, **trigger_tags(Trigger.CLI)}


Outcome = tuple[bool, SwarmReport | None, str | None]
"""The run's success, its report (made here when shards died), and a failure's text: its cause
in one line, then the report when the report step made one (a broker given up on)."""


SHARD_STEP = re.compile(r"run_shard\[shard_(\d+)\]")
DIED = re.compile(r"child process for step \S+ (?:was |unexpectedly )?(.+?)\.(?: |$)")


def _outcome(result: Any) -> Outcome:
    """Success, the report, and a failure's text: its cause, then the report when one was made.

    A run that lost shards (killed, or failed) has no report step; its report is made here from
    the shards that finished, and names the lost ones, whose counts nobody knows.
    """
    if result.success:
        return True, result.output_for_node("swarm_report"), None
    dead: dict[int, str] = {}
    causes: list[str] = []
    for event in result.all_events:
        shard = SHARD_STEP.fullmatch(event.step_key or "")
        died = (
            DIED.search(event.message or "") if event.event_type_value == "ENGINE_EVENT" else None
        )
        if shard and died:
            dead[int(shard[1])] = f"died ({died[1]})"
        elif event.is_step_failure:
            data = event.step_failure_data
            why = data.user_failure_data.description if data.user_failure_data else None
            if event.step_key == "swarm_report" and why:
                return False, None, why
            line = (why or (data.error.message if data.error else "") or "failed").strip()
            if shard:
                dead.setdefault(int(shard[1]), f"failed ({first_line(line)})")
            else:
                causes.append(f"step {event.step_key} failed: {first_line(line)}")
    if dead:
        finished = result.output_for_node("run_shard") if len(dead) < _shards(result) else {}
        report = summarize(sorted(finished.values(), key=lambda r: r.shard))
        report.dead_shards = dead
        return False, report, None
    return False, None, causes[0] if causes else None


def _shards(result: Any) -> int:
    return len({e.step_key for e in result.all_events if SHARD_STEP.fullmatch(e.step_key or "")})


def _recorded(instance: dg.DagsterInstance | None, result: Any) -> Outcome:
    """The run's outcome; an interrupted run that still made its report is recorded as
    canceled, so neither the UI nor the runs list show a success that was cut short."""
    outcome = _outcome(result)
    report = outcome[1]
    if instance is not None and report is not None and report.interrupted:
        instance.report_run_canceled(
            result.dagster_run,
            message=f"interrupted by {report.interrupted}: the devices stopped early; "
            "the report was made",
        )
    return outcome


def _home_instance(home: str, log_level: str) -> dg.DagsterInstance:
    """The ``DAGSTER_HOME`` instance, with Dagster's own lines held at this command's log level.

    An instance that sets no ``python_logs`` prints its system events at DEBUG: each shard's
    step worker announced itself on the terminal (``make dev``'s instance is one).
    """
    path = Path(home) / "dagster.yaml"
    config = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    python_logs = {**(config.get("python_logs") or {}), "python_log_level": log_level}
    ref = InstanceRef.from_dir(home, overrides={"python_logs": python_logs})
    return dg.DagsterInstance.from_ref(ref)


def _execute(config: SwarmConfig, run_config: dict[str, Any]) -> Outcome:
    if config.shards == 1:
        with contextlib.ExitStack() as stack:
            home = settings.dagster_home()
            log_level = run_config["loggers"]["console"]["config"]["log_level"]
            instance = stack.enter_context(_home_instance(home, log_level)) if home else None
            result = cli_swarm_job.execute_in_process(
                run_config=run_config,
                instance=instance,
                tags=run_tags(str(config.swarm_name)),
                raise_on_error=False,
            )
            return _recorded(instance, result)
    return _execute_detached(config, run_config)


def _execute_detached(config: SwarmConfig, run_config: dict[str, Any]) -> Outcome:
    """Shards run under a child in its own session, so ^C reaches only this process.

    Dagster's multiprocess executor abandons the run (and its report step) when it is
    interrupted, so instead of passing ^C on, this process creates the stop file the shards
    watch: they stop sending, drain, and the report is still made.
    """
    with tempfile.TemporaryDirectory(prefix="iot-swarm-") as workdir:
        stop_file, outcome = Path(workdir) / "stop", Path(workdir) / "outcome.pickle"
        plan_config = {**run_config["ops"]["plan_swarm"]["config"], "stop_file": str(stop_file)}
        run_config = {
            **run_config,
            "ops": {"plan_swarm": {"config": plan_config}},
            "execution": {"config": {"multiprocess": multiprocess_config(config.shards)}},
        }
        child = multiprocessing.get_context("spawn").Process(
            target=_run_detached,
            args=(run_config, str(config.swarm_name), workdir, str(outcome)),
        )
        child.start()

        def stop(signum: int, _frame: FrameType | None) -> None:
            tqdm.write("iot-swarm: stopping the devices (^C again to abandon)", file=sys.stderr)
            _ask_stop(stop_file, signum)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while child.exitcode is None:
                child.join(0.5)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if not outcome.exists():
            return False, None, None
        with outcome.open("rb") as f:
            return pickle.load(f)


def _run_detached(run_config: dict[str, Any], name: str, workdir: str, outcome: str) -> None:
    """The detached run: its own session, so a terminal's ^C reaches only the parent.

    SIGTERM here too (systemd stops a whole control group) or the death of the parent (SIGKILL,
    ^C twice) stops the shards as the parent's ^C does, so nothing outlives the command. The
    job runs in a worker thread: on the main thread Dagster would take SIGTERM over and abandon
    the run, report included.
    """
    os.setsid()
    home = settings.dagster_home()
    stop_file = Path(run_config["ops"]["plan_swarm"]["config"]["stop_file"])
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _frame: _ask_stop(stop_file, signum))
    parent = os.getppid()
    threading.Thread(target=_stop_when_orphaned, args=(parent, stop_file), daemon=True).start()
    done = threading.Event()

    def execute() -> None:
        try:
            with (
                (
                    _home_instance(home, run_config["loggers"]["console"]["config"]["log_level"])
                    if home
                    else dg.DagsterInstance.local_temp(workdir, overrides=QUIET_INSTANCE)
                ) as instance,
                dg.execute_job(
                    dg.reconstructable(_cli_job),
                    instance,
                    run_config=run_config,
                    tags=run_tags(name),
                ) as result,
                open(outcome, "wb") as f,
            ):
                pickle.dump(_recorded(instance, result), f)
        finally:
            done.set()

    threading.Thread(target=execute, name="swarm-run").start()
    while not done.wait(ORPHAN_CHECK_SECONDS):
        pass  # the main thread stays free to run the signal handlers above


def _ask_stop(stop_file: Path, signum: int) -> None:
    """Ask the shards to stop; the first signal's name goes in the file for their report."""
    if not stop_file.exists():
        stop_file.write_text(signal.Signals(signum).name)


def _stop_when_orphaned(parent: int, stop_file: Path) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    _ask_stop(stop_file, signal.SIGKILL)  # iot-swarm itself was killed


def multiprocess_config(shards: int) -> dict[str, Any]:
    """All shards at once; steps fork from a server that has imported the project already,
    which saves the many seconds a fresh interpreter needs to import Dagster per step."""
    return {
        "max_concurrent": shards + 1,
        "start_method": {"forkserver": {"preload_modules": [FORKSERVER_PRELOAD]}},
    }


def _cli_job() -> dg.JobDefinition:
    return cli_swarm_job


def run_swarm(
    make: Callable[[], tuple[SwarmConfig, dict[str, Any], MqttResource]],
) -> tuple[int, str]:
    """Check, plan and run the swarm job that ``make`` configures: (exit status, report)."""
    try:
        config, run_config, mqtt = make()
        cosmos = CosmosSource(**run_config["resources"]["cosmos"]["config"])
        swarm = prepare(config, cosmos, mqtt, str(config.swarm_name), _warn)
    except (SwarmConfigError, MqttConfigError, BrokerError, SourceError, ValueError) as exc:
        # ValueError covers pydantic's complaint about a value of the wrong kind.
        secret_files.handoff.remove()
        raise CommandError(first_line(exc), EXIT_BAD_INPUT) from None
    total = swarm.devices * config.max_cycles if config.max_cycles else None
    resumed_cycles = sum(p.cycles for s in swarm.shards for p in s.positions.values())
    try:
        with _Progress(config, total, resumed_cycles):
            success, report, failure = _execute(config, run_config)
    finally:  # every shard has read its secrets by now, or never will
        secret_files.handoff.remove()
    if not success and report is not None and report.dead_shards:  # what the others did
        print(f"iot-swarm: error: {dead_shards_cause(report)}", file=sys.stderr)
        return EXIT_FAILED, render_text(report, str(config.swarm_name))
    if failure is not None:  # its cause in one line, then the report when one was made
        cause, _, text = failure.partition("\n")
        if not text:
            raise CommandError(cause, EXIT_FAILED)
        print(f"iot-swarm: error: {cause}", file=sys.stderr)
        return EXIT_FAILED, text
    if not success or report is None:
        raise CommandError("the swarm run failed; its log is in the Dagster UI", EXIT_FAILED)
    text = render_text(report, str(config.swarm_name))
    if report.interrupted:
        print(
            f"iot-swarm: interrupted by {report.interrupted}: the devices stopped early, "
            "the report below was saved",
            file=sys.stderr,
        )
        return EXIT_SIGTERM if report.interrupted == "SIGTERM" else EXIT_SIGINT, text
    if config.qos == 1 and (report.lost or report.failed):
        return EXIT_FAILED, text
    if not config.dry and not report.acknowledged and (report.sent or report.errors):
        return EXIT_FAILED, text + "\nno message reached the broker"
    return EXIT_OK, text


def _warn(line: str) -> None:
    print(f"iot-swarm: warning: {line}", file=sys.stderr)
