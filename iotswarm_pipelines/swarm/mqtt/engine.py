"""`run_shard`: publish a shard's devices over MQTT from one event loop, and account for it.

The shard is put together from four pieces, each in its own module:
- `connections.py` opens, watches and reopens the paho clients;
- `window.py` runs the devices' cycles and keeps each connection's publish window;
- `accounting.py` holds the counts, the timeline and the error lines;
- this module runs the loop, stops, drains and closes.

Decisions:
- One selector loop per shard process drives every publishing paho client (see `loop.py`), so
  20,000 per-device connections cost sockets and a few KB each, not threads. Only the blocking
  connect/handshake runs on a few worker threads, and the verifier has its own thread.
- A stop (asked for, or every device finished) stops new publishes at once, then waits up to
  `DRAIN_SECONDS` for outstanding acks and verifier arrivals; whatever is still unacknowledged
  then counts as failed, so a dead broker cannot hold a run open.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import random
import resource
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from iotswarm_pipelines.payloads import DEFAULT_FORMAT, PayloadFormat
from iotswarm_pipelines.swarm.mqtt.accounting import Accounts
from iotswarm_pipelines.swarm.mqtt.commands import Commands, HistoryReader
from iotswarm_pipelines.swarm.mqtt.connections import Connections
from iotswarm_pipelines.swarm.mqtt.loop import EventLoop
from iotswarm_pipelines.swarm.mqtt.settings import MqttConfigError, MqttSettings, check_broker
from iotswarm_pipelines.swarm.mqtt.types import (
    ControlSettings,
    DeviceStream,
    LiveCounts,
    Scenario,
    Schedule,
    ShardResult,
)
from iotswarm_pipelines.swarm.mqtt.verifier import Verifier
from iotswarm_pipelines.swarm.mqtt.window import Publisher, connection_window

Acknowledged = Callable[[list[tuple[DeviceStream, object]]], None]

DRAIN_SECONDS = 10.0  # at the end: wait this long at most for acks and verifier arrivals
STOP_CHECK_INTERVAL = 0.2
SPARE_FILES = 64


@dataclass(frozen=True)
class Control:
    """What a shard needs to answer the command API: the settings, the devices' payload format
    and program, and a reader of the data source's rows for historicData."""

    settings: ControlSettings
    read_history: HistoryReader
    payload_format: PayloadFormat = DEFAULT_FORMAT


def files_needed(devices: int, connections: str) -> int:
    """Open files a shard of ``devices`` needs: its connections, the verifier's, and spares."""
    return (devices if connections == "per_device" else 1) + 1 + SPARE_FILES


def raise_open_file_limit(needed: int) -> None:
    """Lift the soft open-file limit (to the hard one, or higher when privileged) or say why not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = hard if hard == resource.RLIM_INFINITY else max(hard, needed)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
    except (ValueError, OSError):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        raise MqttConfigError(
            f"open-file limit {soft} is too low for {needed - SPARE_FILES} MQTT connections: "
            f"raise it (`ulimit -n {needed}`, or LimitNOFILE) or use more shards"
        )


class _Shard:
    def __init__(
        self,
        shard: int,
        devices: Sequence[DeviceStream],
        settings: MqttSettings,
        schedule: Schedule,
        connections: str,
        dry: bool,
        verify: bool,
        should_stop: Callable[[], bool],
        on_progress: Callable[[ShardResult], None] | None,
        progress_interval: float,
        scenario: Scenario,
        client_id: str | None = None,
        observe: Callable[[LiveCounts], None] | None = None,
        observe_interval: float = 1.0,
        control: Control | None = None,
        on_acknowledged: Acknowledged | None = None,
    ) -> None:
        self.should_stop = should_stop
        self.observe = observe
        self.observe_interval = observe_interval
        self.on_acknowledged = on_acknowledged
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.delay_start = schedule.delay_start
        self.dry = dry
        self.give_up_after = settings.give_up_after
        self.settings_address = settings.address
        rng = random.Random(f"{schedule.seed}:{shard}")
        self.loop = EventLoop(settings.keepalive)
        self.accounts = Accounts(shard, len(devices))
        self.verifier: Verifier | None = None
        if verify and not dry:
            self.verifier = Verifier(
                shard,
                [d.topic for d in devices],
                settings,
                self.accounts.timeline,
                seed=schedule.seed,
                on_change=self.loop.wake,
            )
        self.publisher = Publisher(
            settings.qos, schedule, self.loop, self.accounts, rng, self.verifier, scenario
        )
        self.per_device = connections == "per_device"
        self.commands: Commands | None = None
        if control is not None and self.per_device and not dry:
            self.commands = Commands(
                control.settings,
                self.loop,
                self.accounts,
                rng,
                settings.qos,
                control.read_history,
                control.payload_format,
            )
        self.connections = Connections(
            shard,
            settings,
            self.loop,
            self.accounts,
            rng,
            may_connect=self._verifier_ready,
            on_up=self._connected,
            on_down=self.publisher.disconnected,
        )
        publisher = self.publisher
        window = connection_window(settings.qos, len(devices) if self.per_device else 1)
        if dry:
            conn = self.connections.add_dry(window)
            for stream in devices:
                publisher.add(stream, conn)
        elif connections == "shared":
            ids = hashlib.sha1("\n".join(sorted(d.device_id for d in devices)).encode())
            name = client_id or f"iotswarm-shard-{shard}-{ids.hexdigest()[:8]}"
            conn = self.connections.add(name, window, publisher.on_publish)
            for stream in devices:
                publisher.add(stream, conn)
        else:
            for stream in devices:
                conn = self.connections.add(stream.device_id, window, publisher.on_publish)
                publisher.add(stream, conn)
                if self.commands is not None and control is not None:
                    self.commands.add(conn, stream, control.payload_format.prog_name)
        self.publisher.connections = self.connections
        if self.commands is not None:
            self.commands.connections = self.connections
        if not dry:
            self.accounts.result.connections = len(self.connections.all)
        if observe is not None:  # latencies are collected only for someone who takes them
            self.accounts.publish_latencies = []
            if self.verifier is not None:
                self.verifier.latency_sink = deque()

    def _connected(self, conn, properties) -> None:
        self.publisher.connected(conn, properties)
        if self.commands is not None:
            self.commands.connected(conn)

    def _verifier_ready(self) -> bool:
        return self.verifier is None or self.verifier.ready

    def _gave_up(self, now: float) -> bool:
        """A broker unreachable for ``give_up_after`` ends the shard instead of waiting forever."""
        limit = self.give_up_after
        if self.dry or not limit or self.connections.unreachable_for(now) < limit:
            return False
        self.accounts.result.gave_up = True
        self.accounts.error(
            f"MQTT broker {self.settings_address}: no connection for {limit:g}s "
            "(give_up_after), gave up"
        )
        return True

    def _live(self) -> LiveCounts:
        """The figures so far, latencies taken (a list swapped, a deque drained: the verifier's
        thread appends to it meanwhile)."""
        accounts, verifier = self.accounts, self.verifier
        published, accounts.publish_latencies = accounts.publish_latencies or [], []
        live = LiveCounts(
            accounts.result,
            self.publisher.phase,
            self.connections.up,
            self.connections.connects,
            publish_latencies=published,
        )
        if verifier is not None:
            live.delivered, live.duplicated = verifier.delivered, verifier.duplicated
            sink = verifier.latency_sink
            while sink:
                live.delivery_latencies.append(sink.popleft())
        return live

    def _drained(self) -> bool:
        if self.publisher.unfinished(self.connections.all):
            return False
        return self.verifier is None or self.verifier.outstanding == 0

    def run(self) -> ShardResult:
        publisher, connections, verifier = self.publisher, self.connections, self.verifier
        conns = connections.all
        if verifier is not None:
            verifier.start()
        publisher.start(self.delay_start, hold_joining=self.per_device and not self.dry)
        if not self.dry:
            connections.start()
        start = time.monotonic()
        next_stop_check = start
        next_progress = start + self.progress_interval
        next_observe = start if self.observe is not None else float("inf")
        drain_deadline: float | None = None
        verifier_was_ready = False
        while True:
            now = time.monotonic()
            if not publisher.stopping and now >= next_stop_check:
                next_stop_check = now + STOP_CHECK_INTERVAL
                if self.should_stop() or publisher.active == 0 or self._gave_up(now):
                    publisher.stop(conns)
            if publisher.stopping:
                if drain_deadline is None:
                    drain_deadline = now + DRAIN_SECONDS
                    if verifier is not None:
                        verifier.notify_drained = True
                if self._drained() or now >= drain_deadline:
                    break
            if verifier is not None and verifier.ready != verifier_was_ready:
                verifier_was_ready = verifier.ready
                if verifier_was_ready:
                    publisher.dirty.update(conn for conn in conns if conn.ready)
            connections.service(now)
            if self.commands is not None:
                self.commands.service()
            if publisher.dirty:
                publisher.pump_dirty(now)
                if publisher.moved:  # the rows just sent, before the loop waits
                    self._report_moved()
            busy = bool(publisher.dirty)
            self.loop.run_once(0.0 if busy else connections.wait_time(now, STOP_CHECK_INTERVAL))
            if publisher.moved:  # before the next turn publishes more
                self._report_moved()
            if self.on_progress is not None and now >= next_progress:
                next_progress = now + self.progress_interval
                self.on_progress(self.accounts.snapshot(verifier))
            if now >= next_observe:
                next_observe = now + self.observe_interval
                self.observe(self._live())  # type: ignore[misc]
        publisher.give_up(conns, DRAIN_SECONDS)
        self._close()
        self._report_moved()
        if self.observe is not None:
            self.observe(self._live())
        return self.accounts.snapshot(verifier)

    def _report_moved(self) -> None:
        moved, self.publisher.moved = self.publisher.moved, set()
        if self.on_acknowledged is not None and moved:
            self.on_acknowledged([(device.stream, device.acked_mark) for device in moved])

    def _close(self) -> None:
        if self.commands is not None:
            self.commands.close()
        self.connections.close()
        if self.verifier is not None:
            self.verifier.stop()
        self.connections.disconnect_all()
        self.loop.close()


def run_shard(
    shard: int,
    devices: Sequence[DeviceStream],
    settings: MqttSettings,
    schedule: Schedule,
    *,
    connections: str = "per_device",
    client_id: str | None = None,
    dry: bool = False,
    verify: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[ShardResult], None] | None = None,
    progress_interval: float = 5.0,
    scenario: Scenario | None = None,
    observe: Callable[[LiveCounts], None] | None = None,
    observe_interval: float = 1.0,
    control: Control | None = None,
    on_acknowledged: Acknowledged | None = None,
) -> ShardResult:
    """Publish every device's messages per the schedule and report what happened.

    ``on_acknowledged`` gets, once per loop turn, each device that sent or whose acknowledged
    messages moved on, and the ``Message.mark`` of its newest one acknowledged in order (None
    before its first; for QoS 0 and dry runs, of its newest one sent).

    Raises `MqttConfigError`, `BrokerUnreachableError` or `BrokerRefusedError` before any device
    starts; once running, connection trouble is retried and reported in the result.
    ``observe`` (live metrics) gets the figures so far every ``observe_interval`` seconds, on
    the engine's thread between loop turns (so nothing per message), and once at the end.
    """
    if connections not in ("per_device", "shared"):
        raise MqttConfigError(f"connections {connections!r} is not 'per_device' or 'shared'")
    if not 0 <= schedule.no_send_probability <= 100:
        raise MqttConfigError("no_send_probability must be between 0 and 100")
    if schedule.max_cycles < 0:
        raise MqttConfigError("max_cycles must be >= 0 (0 = until stopped)")
    settings.validate()
    if not dry:
        raise_open_file_limit(files_needed(len(devices), connections))
        check_broker(settings, timeout=settings.connect_timeout)
    engine = _Shard(
        shard,
        devices,
        settings,
        schedule,
        connections,
        dry,
        verify,
        should_stop,
        on_progress,
        progress_interval,
        scenario or Scenario(),
        client_id,
        observe,
        observe_interval,
        control,
        on_acknowledged,
    )
    with _heap_frozen():
        return engine.run()


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """Keep the cyclic garbage collector off everything that existed before the loop started.

    Every QoS 1 publish allocates a dozen container objects (paho's message, its info, a
    condition and its lock) that live until the PUBACK, so collections run constantly, and each
    full one walked the whole heap: Dagster's modules and the devices' data, hundreds of
    thousands of objects that are never garbage. With 50 per-device connections (10,000
    messages in flight) that was a third of the engine thread's time. Frozen, a collection
    walks only what the loop itself allocated.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
