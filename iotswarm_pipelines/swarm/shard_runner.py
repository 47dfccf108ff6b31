"""One planned shard, run to its end in this process, without Dagster.

The ``run_shard`` op is a thin shell over ``run_planned_shard``: the runner builds the device
streams, runs the MQTT engine on a worker thread, saves the devices' positions (periodically in
the background, finally in the foreground) and turns every way of being told to stop into the
engine's clean stop: an interruption of the calling thread (^C, or Dagster's termination, which
the op names in ``interrupts``), SIGTERM to this process, or the swarm's stop file appearing.
A clean stop lets the devices drain and still returns a result, so the report is made and the
saved session never repeats a row.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.daemon_pool import DaemonPool
from iotswarm_pipelines.metrics import exposition
from iotswarm_pipelines.metrics.swarm import SWARM_JOB, ShardMetrics
from iotswarm_pipelines.payloads import PayloadFormat
from iotswarm_pipelines.swarm import data, session_store, sessions
from iotswarm_pipelines.swarm.data import RowSource
from iotswarm_pipelines.swarm.mqtt.engine import Control
from iotswarm_pipelines.swarm.mqtt.engine import run_shard as run_engine
from iotswarm_pipelines.swarm.mqtt.settings import MqttSettings
from iotswarm_pipelines.swarm.mqtt.types import ControlSettings, DeviceStream, ShardResult
from iotswarm_pipelines.swarm.options import SwarmOptions
from iotswarm_pipelines.swarm.planning import ShardPlan

WAKE_SECONDS = 0.5  # how often the waiting thread looks up from the engine (signals land here)
OBSERVE_SECONDS = 1.0  # how often the engine refreshes the live metrics (when they are on)


@dataclass(frozen=True)
class ShardOutcome:
    result: ShardResult
    interrupted: bool  # stopped by a signal or termination rather than by its schedule


def progress_line(result: ShardResult) -> str:
    seconds = max(time.time() - result.started_at, 1e-9)
    line = (
        f"shard {result.shard}: sent {result.sent} ({result.sent / seconds:.1f}/s), "
        f"acknowledged {result.acknowledged}, failed {result.failed}, skipped {result.skipped}"
    )
    if result.verified:
        line += f", delivered {result.delivered}, lost so far {result.lost}"
    return line


class _AckJournal:
    """Each loop turn's moved positions (acknowledged, sent), appended to a file when the turn
    has published and when it has read acknowledgements, so a shard killed outright (SIGKILL,
    the OOM killer) resumes from its last acknowledged row, not from its last periodic save, and
    knows which rows it re-sends. Each ``write`` holds only the devices that moved; the kernel
    keeps what was written when the process dies. Each periodic save starts a new file
    and, once saved, deletes the older ones (the save holds all they said). A session kept in
    S3 has no journal: it resumes from the periodic saves."""

    def __init__(self, shard: ShardPlan, log: Callable[[str], None]) -> None:
        spec = shard.spec
        where = session_store.location(spec.options.sessions_dir)
        self.folder = None if where.startswith("s3://") else Path(where)
        self.prefix = f"{spec.swarm_name}.shard-{shard.shard}.acks-"
        self.log = log
        self.index = 0
        self.fd: int | None = None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._open()

    def _open(self) -> None:
        assert self.folder is not None
        path = self.folder / f"{self.prefix}{self.index}"
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(self, moved: list[tuple[DeviceStream, object]]) -> None:
        lines = []
        for stream, mark in moved:
            assert isinstance(stream, data.DeviceStreamBase)
            if mark is not None:  # None: nothing acknowledged yet in this run
                stream.acknowledged = mark  # type: ignore[assignment]
            lines.append(sessions.journal_line(stream.device_id, stream.position))
        if self.fd is None:
            return
        try:
            os.write(self.fd, "".join(lines).encode())
        except OSError as exc:  # a full disk: the periodic saves still run
            self.log(f"acknowledgement journal not written ({exc.strerror}); saves continue")
            self._close_file()

    def _close_file(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def rotate(self) -> int:
        """Start the next file; returns the last index a save from now on makes obsolete."""
        if self.fd is None:
            return -1
        self._close_file()
        self.index += 1
        self._open()
        return self.index - 1

    def drop(self, upto: int) -> None:
        if self.folder is not None:
            for index in range(upto + 1):
                (self.folder / f"{self.prefix}{index}").unlink(missing_ok=True)

    def close(self) -> None:
        """After the final save: the journal said nothing the save does not."""
        self._close_file()
        self.drop(self.index)


class _PositionSaver:
    """Writes the shard's session file on another thread, so 20,000 devices never stall the
    engine's loop (which only copies the positions); a save still being written is not queued
    behind, the next interval catches up."""

    def __init__(
        self, shard: ShardPlan, streams: list[data.DeviceStreamBase], journal: _AckJournal
    ) -> None:
        self.shard, self.streams, self.journal = shard, streams, journal
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swarm-session")
        self.saving: Future | None = None

    def save(self, background: bool = False) -> None:
        if background and self.saving is not None and not self.saving.done():
            return
        spec, options = self.shard.spec, self.shard.spec.options
        obsolete = self.journal.rotate()  # on the engine's thread, as its journal writes
        positions = {s.device_id: s.position for s in self.streams}
        args = (spec.swarm_name, self.shard.shard, spec.table.name, options.mode, positions)
        self.saving = self.writer.submit(sessions.save_shard, *args, options.sessions_dir)
        self.saving.add_done_callback(lambda saved: self._saved(saved, obsolete))
        if not background:
            self.saving.result()

    def _saved(self, saving: Future, obsolete: int) -> None:
        if saving.exception() is None:
            self.journal.drop(obsolete)

    def close(self) -> None:
        self.save()
        self.writer.shutdown()
        self.journal.close()


@contextlib.contextmanager
def _sigterm_stops(stop: Callable[[str], None]) -> Iterator[None]:
    """SIGTERM (systemd, Docker, Kubernetes, ``timeout``) asks for the same clean stop as ^C.

    Only the main thread may set a handler; elsewhere the caller's own handling applies.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop("SIGTERM"))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _LiveMetrics:
    """The shard's metrics (``--metrics-port``, ``--pushgateway`` or ``IOTSWARM_PUSHGATEWAY``):
    served and pushed while the shard runs, pushed once more with the final figures."""

    def __init__(self, shard: ShardPlan, log: Callable[[str], None]) -> None:
        options = shard.spec.options
        planned = len(shard.devices) * options.max_cycles if options.max_cycles else None
        self.metrics = ShardMetrics(shard.spec.swarm_name, shard.shard, planned)
        self.stop_serving: Callable[[], None] | None = None
        self.pusher: exposition.Pusher | None = None
        if options.metrics_port:
            port = options.metrics_port + shard.shard
            self.stop_serving = exposition.serve(
                self.metrics.registry, port, f"shard {shard.shard}"
            )
            log(f"shard {shard.shard}: metrics on port {port} (/metrics)")
        url = exposition.pushgateway_url(options.pushgateway)
        if url:
            registry, grouping = self.metrics.registry, self.metrics.grouping
            interval = options.metrics_interval
            self.pusher = exposition.Pusher(url, SWARM_JOB, registry, grouping, interval, log)
            self.pusher.start()

    @staticmethod
    def wanted(shard: ShardPlan) -> bool:
        options = shard.spec.options
        return bool(options.metrics_port or exposition.pushgateway_url(options.pushgateway))

    def close(self, result: ShardResult | None) -> None:
        self.metrics.finish(result)
        if self.pusher is not None:
            self.pusher.close()
        if self.stop_serving is not None:
            self.stop_serving()


def control_of(
    options: SwarmOptions,
    table: catalogue.Table,
    rows: RowSource,
    payload_format: PayloadFormat,
    log: Callable[[str], None],
) -> Control | None:
    """The command API as the options ask for it; None when off, or when it cannot apply
    (``basic`` devices have no such API; a shared connection cannot carry per-device wills,
    subscriptions and reboots; a dry run has no broker), which is said in one line."""
    if not options.control or options.device_type != "cr1000x" or options.dry:
        return None
    if options.connections != "per_device":
        log("command and control is off: it needs per_device connections (connections=shared)")
        return None
    settings = ControlSettings(
        group_id=options.group_id,
        reboot_seconds=options.reboot_seconds,
        tables=tuple(dict.fromkeys((table.name, table.legacy_name, "default"))),
        ignore_share=options.control_ignore_share,
        late_share=options.control_late_share,
        late_median_s=options.control_late_median,
        late_p99_s=options.control_late_p99,
        download_fail_share=options.control_download_fail_share,
        download_timeout_s=options.download_timeout,
    )

    def read_history(site: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return data.rows_between(rows, site, start, end)

    return Control(settings, read_history, payload_format)


def run_planned_shard(
    shard: ShardPlan,
    rows: RowSource,
    settings: MqttSettings,
    *,
    log: Callable[[str], None] = lambda _line: None,
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
) -> ShardOutcome:
    """Publish the shard's devices until their schedule ends or a stop is asked for.

    Raises what the engine raises before any device starts (``MqttConfigError``,
    ``BrokerError``), or ``MetricsError`` (a metrics port in use); an exception of
    ``interrupts`` in the calling thread stops the devices cleanly instead of propagating.
    """
    spec, options = shard.spec, shard.spec.options
    payload_format = PayloadFormat(options.prog_name, options.strict_json)
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
        payload_format=payload_format,
    )
    live = _LiveMetrics(shard, log) if _LiveMetrics.wanted(shard) else None
    quiet: Callable[[str], None] = lambda _line: None  # noqa: E731 (one line per swarm)
    control = control_of(
        options, spec.table, rows, payload_format, log if shard.shard == 0 else quiet
    )
    journal = _AckJournal(shard, log)
    saver = _PositionSaver(shard, streams, journal)
    stop = threading.Event()
    stopped_by: list[str] = []  # the first reason to stop early names the interruption
    stop_file = Path(options.stop_file) if options.stop_file else None

    def ask_stop(reason: str) -> None:
        stopped_by.append(reason)
        stop.set()

    def should_stop() -> bool:
        return stop.is_set() or (stop_file is not None and stop_file.exists())

    def on_progress(result: ShardResult) -> None:
        log(progress_line(result))
        saver.save(background=True)

    def work() -> ShardResult:
        return run_engine(
            shard.shard,
            streams,
            settings,
            spec.schedule,
            connections=options.connections,
            client_id=options.client_id,
            dry=options.dry,
            verify=options.verify,
            should_stop=should_stop,
            on_progress=on_progress,
            progress_interval=options.progress_interval,
            scenario=shard.scenario,
            observe=live.metrics.observe if live is not None else None,
            observe_interval=min(OBSERVE_SECONDS, options.metrics_interval),
            control=control,
            on_acknowledged=journal.record,
        )

    # The engine runs on a daemon worker so that an interruption of this thread can ask it to
    # stop and still collect its partial result; this thread waits on its future in short
    # slices, so a signal lands here rather than in a join.
    interrupted = False
    with _sigterm_stops(ask_stop):
        worker = DaemonPool(1, f"swarm-shard-{shard.shard}")
        engine = worker.submit(work)
        worker.shutdown(wait=False)  # its one thread ends with the engine
        while not engine.done():
            try:
                wait([engine], timeout=WAKE_SECONDS)
            except interrupts:
                ask_stop("SIGINT")
            if stop.is_set() and not interrupted:
                interrupted = True
                log(f"shard {shard.shard}: asked to stop, stopping the devices")
    saver.close()
    error = engine.exception()
    if live is not None:
        live.close(None if error is not None else engine.result())
    if error is not None:
        raise error
    result = engine.result()
    if stop_file is not None and stop_file.exists():
        stopped_by.append(_stop_file_reason(stop_file))
    result.interrupted = stopped_by[0] if stopped_by else ""
    result.resent = sum(stream.resent for stream in streams)
    return ShardOutcome(result, interrupted)


def _stop_file_reason(stop_file: Path) -> str:
    """The stop file holds the signal its writer (``iot-swarm``) was stopped by."""
    try:
        return stop_file.read_text().strip() or "stop file"
    except OSError:
        return "stop file"
