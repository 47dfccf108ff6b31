"""`run_shard`: publish a shard's devices over MQTT from one event loop, and account for it.

Decisions:
- One selector loop per shard process drives every publishing paho client (see `loop.py`), so
  20,000 per-device connections cost sockets and a few KB each, not threads. Only the blocking
  connect/handshake runs on a few worker threads, and the verifier has its own thread.
- paho keeps unacknowledged QoS 1 messages across reconnects and re-sends them (with the DUP
  flag) after CONNACK whatever the session flag, so the engine relies on that instead of a queue
  of its own; a re-send whose first copy did reach the broker shows up in the verifier as a
  duplicate, never as a second delivery. QoS 0 messages not yet written when a connection drops
  are gone (that is QoS 0) and count as failed.
- With the verifier on, publishing (and reconnecting after a drop) waits until the verifier is
  subscribed on its current connection, so a broker restart cannot make it miss messages that
  publishers re-send.
- Each device fetches its next message only when its connection can publish it, so a stop
  never throws away a consumed message (the data modes' saved positions stay exact).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import resource
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Literal

import paho.mqtt.client as paho

from iotswarm_pipelines.swarm.mqtt.loop import EventLoop
from iotswarm_pipelines.swarm.mqtt.rate import TokenBucket, backoff_delay
from iotswarm_pipelines.swarm.mqtt.settings import (
    MqttConfigError,
    MqttSettings,
    check_broker,
    classify_connect_error,
    new_client,
)
from iotswarm_pipelines.swarm.mqtt.types import DeviceStream, Schedule, ShardResult
from iotswarm_pipelines.swarm.mqtt.verifier import Timeline, Verifier

QOS1_WINDOW = 200  # unacknowledged QoS 1 publishes per connection (the engine's, not paho's)
QOS0_WINDOW = 500  # QoS 0 publishes queued but not yet written to the socket, per connection
DRAIN_SECONDS = 10.0  # at the end: wait this long at most for acks and verifier arrivals
STOP_CHECK_INTERVAL = 0.2
CONNECT_WORKERS = 16  # connections being opened at once (threads blocked in connect/handshake)
MAX_ERRORS = 20
SPARE_FILES = 64


class _Device:
    __slots__ = ("conn", "cycles", "done", "stream", "topic")

    def __init__(self, stream: DeviceStream, conn: _Connection) -> None:
        self.stream = stream
        self.topic = stream.topic
        self.conn = conn
        self.cycles = 0
        self.done = False


class _Connection:
    __slots__ = (
        "attempt_id",
        "attempts",
        "bucket",
        "client",
        "connected",
        "connecting",
        "outstanding",
        "queued",
        "ready",
        "wake_at",
        "window",
    )

    def __init__(self, client: paho.Client | None, window: int, rate: float) -> None:
        self.client = client
        self.window = window
        self.bucket = TokenBucket(rate)
        self.ready: deque[_Device] = deque()
        # QoS 1: mids awaiting PUBACK; QoS 0: paho's infos of packets not yet written, in order.
        self.outstanding: set[int] | deque[paho.MQTTMessageInfo] = set()
        self.connected = client is None  # dry: nothing to connect
        self.connecting = False
        self.queued = False  # waiting in the connect queue
        self.attempts = 0
        self.attempt_id = 0
        self.wake_at = 0.0


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
    ) -> None:
        self.shard = shard
        self.settings = settings
        self.schedule = schedule
        self.dry = dry
        self.qos = settings.qos
        self.should_stop = should_stop
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.random = random.Random(f"{schedule.seed}:{shard}")
        self.loop = EventLoop(settings.keepalive)
        self.started_at = time.time()
        self.timeline = Timeline(self.started_at)
        self.result = ShardResult(shard=shard, devices=len(devices), connections=0)
        self.result.started_at = self.started_at
        self.errors: dict[str, None] = {}
        self.stopping = False
        self.closing = False
        self.dirty: set[_Connection] = set()
        self.connect_queue: deque[_Connection] = deque()
        self.connect_bucket = TokenBucket(settings.connect_rate)
        self.connector: ThreadPoolExecutor | None = None
        self.connects_in_flight = 0
        self.opened: deque[tuple[_Connection, BaseException | None]] = deque()
        if not settings.qos:
            self.loop.on_written = self._on_written
        self.verifier: Verifier | None = None
        if verify and not dry:
            self.verifier = Verifier(
                shard,
                [d.topic for d in devices],
                settings,
                self.timeline,
                seed=schedule.seed,
                on_change=self.loop.wake,
            )
        window = QOS1_WINDOW if self.qos else QOS0_WINDOW
        self.conns: list[_Connection] = []
        self.devices: list[_Device] = []
        if dry:
            conn = _Connection(None, window, 0)
            self.conns.append(conn)
            self.devices = [_Device(stream, conn) for stream in devices]
        elif connections == "shared":
            ids = hashlib.sha1("\n".join(sorted(d.device_id for d in devices)).encode())
            conn = self._new_connection(f"iotswarm-shard-{shard}-{ids.hexdigest()[:8]}", window)
            self.devices = [_Device(stream, conn) for stream in devices]
        else:
            self.devices = [
                _Device(stream, self._new_connection(stream.device_id, window))
                for stream in devices
            ]
        if not dry:
            self.result.connections = len(self.conns)
        self.active = len(self.devices)

    # connections -------------------------------------------------------------------------

    def _new_connection(self, client_id: str, window: int) -> _Connection:
        # paho's own inflight limit rescans every message on each PUBACK: the engine's window
        # bounds what is in flight instead.
        client = new_client(self.settings, client_id, inflight=0)
        conn = _Connection(client, window, self.settings.max_publish_rate)
        if not self.qos:
            conn.outstanding = deque()
        client.user_data_set(conn)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        if self.qos:
            client.on_publish = self._on_publish  # QoS 0 is reaped without paho's per-packet call
        self.loop.attach(client)
        self.conns.append(conn)
        return conn

    def _error(self, line: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors[line] = None

    def _enqueue_connect(self, conn: _Connection) -> None:
        if not conn.queued and not self.closing:
            conn.queued = True
            self.connect_queue.append(conn)

    def _connect_some(self, now: float) -> None:
        if self.verifier is not None and not self.verifier.ready:
            return  # publishers (re)connect only once the verifier listens
        queue = self.connect_queue
        while queue and self.connects_in_flight < CONNECT_WORKERS and self.connect_bucket.take(now):
            conn = queue.popleft()
            conn.queued = False
            if self.closing or conn.connected or conn.connecting:
                continue
            conn.connecting = True
            self.connects_in_flight += 1
            if self.connector is None:
                self.connector = ThreadPoolExecutor(
                    CONNECT_WORKERS, thread_name_prefix=f"mqtt-connect-{self.shard}"
                )
            self.connector.submit(self._open_in_worker, conn)

    def _open_in_worker(self, conn: _Connection) -> None:
        """TCP connect and TLS handshake block (for a round trip or, when a broker's accept
        queue overflows, for SYN retries of seconds), so they run off the loop; the loop takes
        the socket over when they are done. Nothing else touches this client meanwhile."""
        error: BaseException | None = None
        try:
            conn.client.reconnect()
        except Exception as err:
            error = err
        self.opened.append((conn, error))
        self.loop.wake()

    def _take_opened(self) -> None:
        while self.opened:
            conn, error = self.opened.popleft()
            self.connects_in_flight -= 1
            if error is not None:
                conn.connecting = False
                self._connect_failed(conn, str(classify_connect_error(self.settings, error)))
                continue
            self.loop.adopt(conn.client)
            conn.attempt_id += 1
            deadline = time.monotonic() + self.settings.connect_timeout
            self.loop.call_at(deadline, partial(self._connack_overdue, conn, conn.attempt_id))

    def _connack_overdue(self, conn: _Connection, attempt: int) -> None:
        """A broker that accepts TCP but never answers CONNECT must not stall the device."""
        if conn.connecting and conn.attempt_id == attempt and not self.closing:
            conn.connecting = False
            sock = conn.client.socket()
            if sock is not None:
                self.loop.forget(conn.client, sock)
                with contextlib.suppress(OSError):
                    sock.close()
            self._connect_failed(
                conn,
                f"MQTT broker {self.settings.address}: no CONNACK within "
                f"{self.settings.connect_timeout:g}s",
            )

    def _connect_failed(self, conn: _Connection, line: str) -> None:
        self.result.connect_failures += 1
        self._error(line)
        self._retry_later(conn)

    def _retry_later(self, conn: _Connection) -> None:
        if self.closing:
            return
        delay = backoff_delay(
            conn.attempts, self.settings.reconnect_min_delay, self.settings.reconnect_max_delay
        )
        conn.attempts += 1
        delay *= self.random.uniform(0.8, 1.2)  # spread a reconnect storm after a restart
        self.loop.call_at(time.monotonic() + delay, lambda: self._enqueue_connect(conn))

    def _on_connect(self, _client, conn: _Connection, _flags, reason_code, properties) -> None:
        conn.connecting = False
        if reason_code.is_failure:
            self._connect_failed(
                conn, f"MQTT broker {self.settings.address} refused the connection: {reason_code}"
            )
            return
        conn.connected = True
        conn.attempts = 0
        receive_maximum = getattr(properties, "ReceiveMaximum", None) if properties else None
        if self.qos and receive_maximum:
            conn.window = min(conn.window, receive_maximum)
        if conn.ready:
            self.dirty.add(conn)

    def _on_disconnect(self, _client, conn: _Connection, _flags, reason_code, _properties) -> None:
        was_connected = conn.connected
        conn.connected = False
        conn.connecting = False
        if self.qos == 0:
            self._reap_written(conn)
            self.result.failed += len(conn.outstanding)
            conn.outstanding.clear()
        if self.closing:
            return
        if was_connected:
            self._error(f"MQTT connection lost ({reason_code}); reconnecting")
        else:
            self.result.connect_failures += 1
            self._error(f"MQTT broker {self.settings.address} closed the connection before CONNACK")
        self._retry_later(conn)

    def _on_publish(self, _client, conn: _Connection, mid, _reason_code, _properties) -> None:
        if mid in conn.outstanding:
            conn.outstanding.discard(mid)
            self.result.acknowledged += 1
            if conn.ready:
                self.dirty.add(conn)

    def _reap_written(self, conn: _Connection) -> None:
        """Count QoS 0 publishes paho has written (in order) as done."""
        infos = conn.outstanding
        result = self.result
        while infos:
            try:
                if not infos[0].is_published():
                    break
                result.acknowledged += 1
            except (RuntimeError, ValueError):  # dropped by a reconnect before it was written
                result.failed += 1
            infos.popleft()

    def _on_written(self, client: paho.Client) -> None:
        conn: _Connection = client.user_data_get()
        if conn is not None and conn.outstanding:
            before = len(conn.outstanding)
            self._reap_written(conn)
            if conn.ready and len(conn.outstanding) < before:
                self.dirty.add(conn)

    # devices -----------------------------------------------------------------------------

    def _due(self, device: _Device) -> None:
        if self.stopping or device.done:
            return
        probability = self.schedule.no_send_probability
        if probability and self.random.random() * 100.0 < probability:
            message = device.stream.next_message()
            if message is None:
                self._finish(device)
                return
            self.result.skipped += 1
            self._cycle_done(device, message.wait_after, skipped=True)
            return
        conn = device.conn
        conn.ready.append(device)
        self.dirty.add(conn)

    def _finish(self, device: _Device) -> None:
        if not device.done:
            device.done = True
            self.active -= 1

    def _cycle_done(self, device: _Device, wait_after: float, skipped: bool = False) -> None:
        device.cycles += 1
        if self.schedule.max_cycles and device.cycles >= self.schedule.max_cycles:
            self._finish(device)
        elif wait_after <= 0 and not skipped:
            self._due(device)
        else:  # a timer, also for back-to-back skips, which would otherwise recurse
            self.loop.call_at(time.monotonic() + wait_after, lambda: self._due(device))

    def _pump(self, conn: _Connection, now: float) -> None:
        """Publish the connection's due devices while its window and rate cap allow."""
        ready = conn.ready
        client = conn.client
        verifier = self.verifier
        if not conn.connected or (verifier is not None and not verifier.ready):
            return
        result = self.result
        timeline = self.timeline
        qos = self.qos
        outstanding = conn.outstanding
        published = False
        while ready and len(outstanding) < conn.window:
            if not conn.bucket.take(now):
                wake = now + conn.bucket.wait_time(now)
                if conn.wake_at <= now:
                    conn.wake_at = wake
                    self.loop.call_at(wake, lambda: self.dirty.add(conn))
                break
            device = ready.popleft()
            message = device.stream.next_message()
            if message is None:
                self._finish(device)
                continue
            sent_at = time.time()
            result.sent += 1
            timeline.sent(sent_at)
            if client is not None:
                if verifier is not None:
                    verifier.expect(device.topic, message.payload, sent_at)
                info = client.publish(device.topic, message.payload, qos)
                if qos:
                    outstanding.add(info.mid)  # paho re-sends it after a reconnect if need be
                elif info.rc == paho.MQTT_ERR_SUCCESS:
                    outstanding.append(info)
                else:
                    result.failed += 1
                published = True
            self._cycle_done(device, message.wait_after)
            if self.stopping:
                ready.clear()
        if published and conn.connected:
            client.loop_write()
            if not qos:
                self._reap_written(conn)
                if ready and len(outstanding) < conn.window:
                    self.dirty.add(conn)

    # running -----------------------------------------------------------------------------

    def _snapshot(self) -> ShardResult:
        result = self.result
        verifier = self.verifier
        result.errors = list(self.errors)
        result.timeline = self.timeline.rows()
        result.ended_at = time.time()
        if verifier is not None:
            result.verified = True
            result.delivered = verifier.delivered
            result.duplicated = verifier.duplicated
            result.lost = verifier.outstanding
            result.latencies_ms = list(verifier.latencies.samples)
            for line in verifier.errors:
                self._error(line)
            result.errors = list(self.errors)
        return ShardResult(**vars(result))

    def _drained(self) -> bool:
        if any(conn.outstanding for conn in self.conns):
            return False
        return self.verifier is None or self.verifier.outstanding == 0

    def run(self) -> ShardResult:
        if self.verifier is not None:
            self.verifier.start()
        if not self.dry:
            for conn in self.conns:
                self._enqueue_connect(conn)
        start = time.monotonic()
        for device in self.devices:
            delay = self.schedule.delay_start
            first = start + (self.random.uniform(0, delay) if delay > 0 else 0.0)
            self.loop.call_at(first, lambda device=device: self._due(device))
        next_stop_check = start
        next_progress = start + self.progress_interval
        drain_deadline: float | None = None
        verifier_was_ready = False
        while True:
            now = time.monotonic()
            if not self.stopping and now >= next_stop_check:
                next_stop_check = now + STOP_CHECK_INTERVAL
                if self.should_stop() or self.active == 0:
                    self.stopping = True
                    for conn in self.conns:
                        conn.ready.clear()
            if self.stopping:
                if drain_deadline is None:
                    drain_deadline = now + DRAIN_SECONDS
                    if self.verifier is not None:
                        self.verifier.notify_drained = True
                if self._drained() or now >= drain_deadline:
                    break
            if self.verifier is not None and self.verifier.ready != verifier_was_ready:
                verifier_was_ready = self.verifier.ready
                if verifier_was_ready:
                    self.dirty.update(conn for conn in self.conns if conn.ready)
            if self.opened:
                self._take_opened()
            if self.connect_queue:
                self._connect_some(now)
            if self.dirty:
                dirty, self.dirty = self.dirty, set()
                for conn in dirty:
                    self._pump(conn, now)
            if self.dirty:
                timeout = 0.0
            elif (
                self.connect_queue
                and self.connects_in_flight < CONNECT_WORKERS
                and (self.verifier is None or self.verifier.ready)
            ):
                timeout = min(STOP_CHECK_INTERVAL, self.connect_bucket.wait_time(now))
            else:
                timeout = STOP_CHECK_INTERVAL
            self.loop.run_once(timeout)
            if self.on_progress is not None and now >= next_progress:
                next_progress = now + self.progress_interval
                self.on_progress(self._snapshot())
        for conn in self.conns:
            if self.qos and conn.outstanding:
                self.result.failed += len(conn.outstanding)
                self._error(
                    f"{len(conn.outstanding)} QoS 1 messages unacknowledged after the "
                    f"{DRAIN_SECONDS:g}s drain window"
                )
                conn.outstanding.clear()
        self._close()
        return self._snapshot()

    def _close(self) -> None:
        self.closing = True
        if self.connector is not None:
            self.connector.shutdown(wait=True, cancel_futures=True)
            for conn, error in self.opened:
                if error is None:
                    self.loop.adopt(conn.client)  # so it is disconnected below
            self.opened.clear()
        if self.verifier is not None:
            self.verifier.stop()
        clients = [conn.client for conn in self.conns if conn.client is not None]
        for client in clients:
            if client.socket() is not None:
                client.disconnect()
        deadline = time.monotonic() + 2.0
        while self.loop.open_sockets and time.monotonic() < deadline:
            self.loop.run_once(0.05)
        for client in clients:
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self.loop.close()


def run_shard(
    shard: int,
    devices: Sequence[DeviceStream],
    settings: MqttSettings,
    schedule: Schedule,
    *,
    connections: Literal["per_device", "shared"] = "per_device",
    dry: bool = False,
    verify: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[ShardResult], None] | None = None,
    progress_interval: float = 5.0,
) -> ShardResult:
    """Publish every device's messages per the schedule and report what happened.

    Raises `MqttConfigError`, `BrokerUnreachableError` or `BrokerRefusedError` before any device
    starts; once running, connection trouble is retried and reported in the result.
    """
    if connections not in ("per_device", "shared"):
        raise MqttConfigError(f"connections {connections!r} is not 'per_device' or 'shared'")
    if not 0 <= schedule.no_send_probability <= 100:
        raise MqttConfigError("no_send_probability must be between 0 and 100")
    if schedule.max_cycles < 0:
        raise MqttConfigError("max_cycles must be >= 0 (0 = until stopped)")
    settings.validate()
    if not dry:
        needed = (len(devices) if connections == "per_device" else 1) + 1 + SPARE_FILES
        raise_open_file_limit(needed)
        check_broker(settings, timeout=settings.connect_timeout)
    return _Shard(
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
    ).run()
