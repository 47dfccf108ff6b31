"""``iot-swarm``: run the swarm job from a terminal, with the old swarm's options and more.

The same job as in the UI (``swarm_job``): one shard runs in this process; more shards run one
process each (the multiprocess executor). Runs are recorded in the ``DAGSTER_HOME`` instance when
one is set, so the UI of ``make dev`` shows them and the report; otherwise in a throw-away one.
Every check that can fail runs before a device starts and prints one line (exit 2). The exit
status is 1 when messages were lost at QoS 1 or the broker could not be used during the run.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg
from tqdm import tqdm

from iotswarm_pipelines import settings
from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource, SourceError
from iotswarm_pipelines.labels import Trigger, trigger_tags
from iotswarm_pipelines.swarm import sessions
from iotswarm_pipelines.swarm.config import COSMOS_SOURCE, SwarmConfig
from iotswarm_pipelines.swarm.devices import SwarmConfigError
from iotswarm_pipelines.swarm.jobs import build_swarm_job
from iotswarm_pipelines.swarm.mqtt.settings import BrokerError, MqttConfigError
from iotswarm_pipelines.swarm.ops import SWARM_TAG, prepare
from iotswarm_pipelines.swarm.report import SwarmReport, render_text
from iotswarm_pipelines.swarm.resources import MqttResource

PASSWORD_ENV = "IOTSWARM_MQTT_PASSWORD"
SOURCE_URL_ENV = "IOTSWARM_SOURCE_URL"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
QUIET_INSTANCE = {"telemetry": {"enabled": False}, "python_logs": {"python_log_level": "WARNING"}}

# Resources configured per launch, so child processes rebuild them from the run config alone.
# Shards always run as local processes here, even with IOTSWARM_EXECUTOR=celery in the shell.
cli_swarm_job = build_swarm_job(
    resource_defs={
        "mqtt": MqttResource.configure_at_launch(),
        "cosmos": CosmosSource.configure_at_launch(),
    },
    executor_def=dg.multi_or_in_process_executor,
)


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line too, like every other bad input (no usage wall)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="iot-swarm",
        allow_abbrev=False,
        description="Simulate COSMOS-UK dataloggers publishing over MQTT and report delivery.",
    )
    d = p.add_argument_group("devices and data")
    d.add_argument("--table", default=catalogue.SOILMET_30MIN.name, help="COSMOS table")
    d.add_argument(
        "--source",
        default=None,
        help="SQLAlchemy URL of a COSMOS database or the path of a CSV export "
        "(default: the sample database under IOTSWARM_DATA_DIR)",
    )
    d.add_argument("--sites", action="append", default=[], help="site IDs, comma-separated")
    d.add_argument("--max-sites", type=int, help="use only the first N sites")
    d.add_argument("--devices", type=int, help="total devices, cloned from the sites")
    d.add_argument("--per-site", type=int, help="devices cloned per site")
    d.add_argument("--device-id-template", help="e.g. '{site}-{n:05d}' ({site}, {n}, {i})")
    d.add_argument("--mode", default="latest", choices=("latest", "loop", "replay"))
    d.add_argument("--speed", type=float, default=48.0, help="replay speed factor")
    d.add_argument("--history-start", help="loop/replay: rows after this ISO time")
    d.add_argument("--rows-per-message", type=int, default=1)
    d.add_argument("--device-type", default="cr1000x", choices=("cr1000x", "basic"))
    s = p.add_argument_group("schedule")
    s.add_argument("--sleep-time", type=float, default=60.0, help="seconds between sends")
    s.add_argument("--max-cycles", type=int, default=1, help="sends per device; 0 = until ^C")
    s.add_argument("--delay-start", action="store_true", help="random first delay <= sleep")
    s.add_argument("--no-send-probability", type=float, default=0.0, help="percent skipped")
    s.add_argument("--shards", type=int, default=1, help="processes publishing in parallel")
    s.add_argument("--swarm-name", help="session name (positions are saved under it)")
    s.add_argument("--resume-session", action="store_true", help="continue --swarm-name")
    s.add_argument("--sessions-dir", help="default <IOTSWARM_DATA_DIR>/swarm_sessions")
    s.add_argument("--dry", action="store_true", help="build messages, send nothing")
    s.add_argument("--verify", action="store_true", help="subscribe and match deliveries")
    m = p.add_argument_group("MQTT")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=1883)
    m.add_argument("--qos", type=int, default=1, choices=(0, 1))
    m.add_argument("--protocol", default="3.1.1", choices=("3.1.1", "5"))
    m.add_argument("--connections", default="per-device", choices=("per-device", "shared"))
    m.add_argument("--mqtt-prefix", help="topic levels before the device ID")
    m.add_argument("--mqtt-suffix", help="topic levels after the device ID")
    m.add_argument("--username")
    m.add_argument("--password-file", help=f"file holding the password (or set {PASSWORD_ENV})")
    m.add_argument("--keepalive", type=int, default=60)
    m.add_argument("--connect-rate", type=float, default=200.0, help="connections per second")
    m.add_argument("--max-publish-rate", type=float, default=100.0, help="per connection")
    t = p.add_argument_group("TLS (AWS IoT Core: --port 8883, or 443 with --alpn x-amzn-mqtt-ca)")
    t.add_argument("--tls", action="store_true", help="implied by the options below")
    t.add_argument("--ca-file")
    t.add_argument("--cert-file")
    t.add_argument("--key-file")
    t.add_argument("--alpn", action="append", default=[])
    t.add_argument("--tls-insecure", action="store_true", help="skip certificate checks")
    p.add_argument("--log-level", default="WARNING", help="Dagster log level on stderr")
    return p


def _source(value: str | None) -> tuple[str, str]:
    """(job ``source`` option, COSMOS URL): a CSV path or a database URL."""
    if value is None:
        return COSMOS_SOURCE, settings.sample_db_url()
    if "://" in value:
        return COSMOS_SOURCE, value
    return str(Path(value).resolve()), settings.sample_db_url()


def _password(args: argparse.Namespace) -> bool:
    """Puts a ``--password-file`` into the environment; True when a password is set there."""
    if args.password_file:
        try:
            text = Path(args.password_file).read_text().strip()
        except OSError as exc:
            raise SwarmConfigError(
                f"cannot read --password-file {args.password_file}: {exc.strerror}"
            ) from None
        os.environ[PASSWORD_ENV] = text
    return bool(os.environ.get(PASSWORD_ENV))


def build(args: argparse.Namespace) -> tuple[SwarmConfig, dict[str, Any], MqttResource]:
    source, url = _source(args.source)
    config = SwarmConfig(
        sites=[s.strip() for v in args.sites for s in v.split(",") if s.strip()],
        max_sites=args.max_sites,
        devices=args.devices,
        per_site=args.per_site,
        device_id_template=args.device_id_template,
        table=args.table,
        source=source,
        mode=args.mode,
        speed=args.speed,
        history_start=args.history_start,
        rows_per_message=args.rows_per_message,
        device_type=args.device_type,
        sleep_time=args.sleep_time,
        max_cycles=args.max_cycles,
        delay_start=args.delay_start,
        no_send_probability=args.no_send_probability,
        mqtt_prefix=args.mqtt_prefix,
        mqtt_suffix=args.mqtt_suffix,
        qos=args.qos,
        protocol=args.protocol,
        connections=args.connections.replace("-", "_"),
        shards=args.shards,
        dry=args.dry,
        verify=args.verify,
        swarm_name=args.swarm_name or f"swarm-{uuid.uuid4().hex[:8]}",
        resume_session=args.resume_session,
        sessions_dir=args.sessions_dir,
        connect_rate=args.connect_rate,
        max_publish_rate=args.max_publish_rate,
        progress_interval=2.0,
    )
    mqtt_config: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "tls": args.tls,
        "alpn": args.alpn,
        "tls_insecure": args.tls_insecure,
        "keepalive": args.keepalive,
        **{
            k: v
            for k, v in {
                "username": args.username,
                "ca_file": args.ca_file,
                "cert_file": args.cert_file,
                "key_file": args.key_file,
            }.items()
            if v
        },
    }
    has_password = _password(args)
    mqtt = MqttResource(**mqtt_config, password=os.environ.get(PASSWORD_ENV) or None)
    if has_password:  # by reference, so the password never enters the run's stored config
        mqtt_config["password"] = {"env": PASSWORD_ENV}
    os.environ[SOURCE_URL_ENV] = url  # by reference too: a database URL may hold a password
    run_config = {
        "ops": {"plan_swarm": {"config": config.model_dump(exclude_none=True)}},
        "resources": {
            "mqtt": {"config": mqtt_config},
            "cosmos": {"config": {"url": {"env": SOURCE_URL_ENV}}},
        },
        "loggers": {"console": {"config": {"log_level": args.log_level.upper()}}},
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
            session = sessions.load_session(self.config.swarm_name, self.config.sessions_dir)
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


def _execute(config: SwarmConfig, run_config: dict[str, Any]) -> tuple[bool, SwarmReport | None]:
    if config.shards == 1:
        with contextlib.ExitStack() as stack:
            home = settings.dagster_home()
            instance = stack.enter_context(dg.DagsterInstance.from_config(home)) if home else None
            result = cli_swarm_job.execute_in_process(
                run_config=run_config,
                instance=instance,
                tags=run_tags(str(config.swarm_name)),
                raise_on_error=False,
            )
            report = result.output_for_node("swarm_report") if result.success else None
            return result.success, report
    return _execute_detached(config, run_config)


def _execute_detached(
    config: SwarmConfig, run_config: dict[str, Any]
) -> tuple[bool, SwarmReport | None]:
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
        while child.exitcode is None:
            try:
                child.join(0.5)
            except KeyboardInterrupt:
                tqdm.write("iot-swarm: stopping the devices (^C again to abandon)", file=sys.stderr)
                stop_file.touch()
                signal.signal(signal.SIGINT, signal.SIG_DFL)
        if not outcome.exists():
            return False, None
        with outcome.open("rb") as f:
            return pickle.load(f)


def _run_detached(run_config: dict[str, Any], name: str, workdir: str, outcome: str) -> None:
    os.setsid()
    home = settings.dagster_home()
    with (
        (
            dg.DagsterInstance.from_config(home)
            if home
            else dg.DagsterInstance.local_temp(workdir, overrides=QUIET_INSTANCE)
        ) as instance,
        dg.execute_job(
            dg.reconstructable(_cli_job), instance, run_config=run_config, tags=run_tags(name)
        ) as result,
    ):
        report = result.output_for_node("swarm_report") if result.success else None
        with open(outcome, "wb") as f:
            pickle.dump((result.success, report), f)


def multiprocess_config(shards: int) -> dict[str, Any]:
    """All shards at once; steps fork from a server that has imported the project already,
    which saves the many seconds a fresh interpreter needs to import Dagster per step."""
    return {
        "max_concurrent": shards + 1,
        "start_method": {"forkserver": {"preload_modules": ["iotswarm_pipelines.swarm.ops"]}},
    }


def _cli_job() -> dg.JobDefinition:
    return cli_swarm_job


class SwarmRunError(RuntimeError):
    """The swarm could not start (bad input) or its run failed; the message is one line."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run(argv: Sequence[str]) -> tuple[int, str]:
    """Run a swarm from command-line arguments: (exit status, printed report).

    Raises ``SwarmRunError`` when nothing could run or the run failed.
    """
    args = _parser().parse_args(argv)
    try:
        config, run_config, mqtt = build(args)
        cosmos = CosmosSource(url=os.environ[SOURCE_URL_ENV])
        swarm = prepare(config, cosmos, mqtt, str(config.swarm_name))
    except (SwarmConfigError, MqttConfigError, BrokerError, SourceError, ValueError) as exc:
        # ValueError covers pydantic's complaint about a value of the wrong kind.
        raise SwarmRunError(str(exc).splitlines()[0], EXIT_BAD_INPUT) from None
    total = swarm.devices * config.max_cycles if config.max_cycles else None
    resumed_cycles = sum(p.cycles for s in swarm.shards for p in s.positions.values())
    with _Progress(config, total, resumed_cycles):
        success, report = _execute(config, run_config)
    if not success or report is None:
        raise SwarmRunError("the swarm run failed; see the log above", EXIT_FAILED)
    text = render_text(report, str(config.swarm_name))
    if config.qos == 1 and (report.lost or report.failed):
        return EXIT_FAILED, text
    if not config.dry and not report.acknowledged and (report.sent or report.errors):
        return EXIT_FAILED, text + "\nno message reached the broker"
    return EXIT_OK, text


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code, text = run(sys.argv[1:] if argv is None else argv)
    except SwarmRunError as exc:
        print(f"iot-swarm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("iot-swarm: error: interrupted", file=sys.stderr)
        return EXIT_FAILED
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
