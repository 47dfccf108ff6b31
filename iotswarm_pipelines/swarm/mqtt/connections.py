"""A shard's MQTT connections: opening them off the loop, CONNACK deadlines, reconnecting.

Decisions:
- TCP connect and TLS handshake block (for a round trip or, when a broker's accept queue
  overflows, for SYN retries of seconds), so they run on a few worker threads; the loop takes
  the socket over when they are done. Nothing else touches a client meanwhile.
- Opening is paced by `connect_rate` and waits for the verifier (`may_connect`), so publishers
  never send before the verifier listens, also after a broker restart.
- A broker that accepts TCP but never answers CONNECT fails the attempt after
  `connect_timeout`; every failed attempt is counted, reported once per distinct line and
  retried with exponential backoff, jittered by ±20% to spread a reconnect storm.
- A held connection (a scenario's outage, or a device that has not joined its ramp yet) is
  closed once its QoS 1 acknowledgements are in (so nothing goes twice) and is not reopened
  until released; the give-up timer does not run while any connection is held.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import paho.mqtt.client as paho

from iotswarm_pipelines.swarm.mqtt.accounting import Accounts
from iotswarm_pipelines.swarm.mqtt.loop import EventLoop
from iotswarm_pipelines.swarm.mqtt.rate import TokenBucket, backoff_delay
from iotswarm_pipelines.swarm.mqtt.settings import (
    MqttSettings,
    classify_connect_error,
    new_client,
)

CONNECT_WORKERS = 16  # connections being opened at once (threads blocked in connect/handshake)


class Connection:
    """One paho client (None when dry) and the publish window the engine keeps for it."""

    __slots__ = (
        "attempt_id",
        "attempts",
        "bucket",
        "client",
        "connected",
        "connecting",
        "held",
        "outstanding",
        "queued",
        "ready",
        "ups",
        "wake_at",
        "window",
    )

    def __init__(self, client: paho.Client | None, qos: int, window: int, rate: float) -> None:
        self.client = client
        self.window = window
        self.bucket = TokenBucket(rate)
        self.ready: deque = deque()  # devices due to publish on this connection
        # QoS 1: mids awaiting PUBACK (-> publish time); QoS 0: paho's infos of packets not yet
        # written, in order.
        self.outstanding: dict[int, float] | deque[paho.MQTTMessageInfo] = {} if qos else deque()
        self.connected = client is None  # dry: nothing to connect
        self.connecting = False
        self.queued = False  # waiting in the connect queue
        self.attempts = 0
        self.attempt_id = 0
        self.wake_at = 0.0
        self.held = False  # kept closed on purpose (outage, not yet joined)
        self.ups = 0  # CONNACKs so far: more than one means it reconnected


class Connections:
    """Opens, watches and reopens a shard's connections; tells the publisher when one is up
    (`on_up(conn, connack_properties)`) or down (`on_down(conn)`)."""

    def __init__(
        self,
        shard: int,
        settings: MqttSettings,
        loop: EventLoop,
        accounts: Accounts,
        rng: random.Random,
        may_connect: Callable[[], bool],
        on_up: Callable[[Connection, object], None],
        on_down: Callable[[Connection], None],
    ) -> None:
        self.shard = shard
        self.settings = settings
        self.loop = loop
        self.accounts = accounts
        self.random = rng
        self.may_connect = may_connect
        self.on_up = on_up
        self.on_down = on_down
        self.all: list[Connection] = []
        self.closing = False
        self.up = 0  # connections holding a CONNACK now
        self.connects = 0  # CONNACKs accepted so far (first connects and reconnects)
        self.held = 0  # connections kept closed on purpose
        self.down_since: float | None = time.monotonic()  # when `up` last fell to 0
        self._queue: deque[Connection] = deque()
        self._bucket = TokenBucket(settings.connect_rate)
        self._connector: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._opened: deque[tuple[Connection, BaseException | None]] = deque()

    def add(
        self,
        client_id: str,
        window: int,
        on_publish: Callable[..., None] | None,
    ) -> Connection:
        # paho's own inflight limit rescans every message on each PUBACK: the engine's window
        # bounds what is in flight instead.
        client = new_client(self.settings, client_id, inflight=0)
        conn = Connection(client, self.settings.qos, window, self.settings.max_publish_rate)
        client.user_data_set(conn)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        if on_publish is not None:
            client.on_publish = on_publish
        self.loop.attach(client)
        self.all.append(conn)
        return conn

    def add_dry(self, window: int) -> Connection:
        conn = Connection(None, self.settings.qos, window, 0)
        self.all.append(conn)
        return conn

    def start(self) -> None:
        for conn in self.all:
            if conn.client is not None:
                self._enqueue(conn)

    def service(self, now: float) -> None:
        """Adopt the sockets workers have opened and start the connects now due."""
        if self._opened:
            self._take_opened()
        if self._queue:
            self._connect_some(now)

    def wait_time(self, now: float, longest: float) -> float:
        """How long the loop may sleep before the next connect is due."""
        if self._queue and self._in_flight < CONNECT_WORKERS and self.may_connect():
            return min(longest, self._bucket.wait_time(now))
        return longest

    def hold(self, conn: Connection) -> None:
        """Keep the connection closed: now if nothing awaits a PUBACK, else once it drains."""
        if not conn.held:
            conn.held = True
            self.held += 1
        self.drop_if_idle(conn)

    def drop_if_idle(self, conn: Connection) -> None:
        if conn.held and conn.connected and not conn.outstanding:
            conn.client.disconnect()

    def release(self, conn: Connection) -> None:
        """Open a held connection again (a planned outage is not a broker gone: the give-up
        timer starts afresh)."""
        if not conn.held:
            return
        conn.held = False
        self.held -= 1
        conn.attempts = 0
        if not self.up:
            self.down_since = time.monotonic()
        self._enqueue(conn)

    def _enqueue(self, conn: Connection) -> None:
        if not conn.queued and not self.closing and not conn.held:
            conn.queued = True
            self._queue.append(conn)

    def _connect_some(self, now: float) -> None:
        if not self.may_connect():
            return
        queue = self._queue
        while queue and self._in_flight < CONNECT_WORKERS and self._bucket.take(now):
            conn = queue.popleft()
            conn.queued = False
            if self.closing or conn.connected or conn.connecting or conn.held:
                continue
            conn.connecting = True
            self._in_flight += 1
            if self._connector is None:
                self._connector = ThreadPoolExecutor(
                    CONNECT_WORKERS, thread_name_prefix=f"mqtt-connect-{self.shard}"
                )
            self._connector.submit(self._open_in_worker, conn)

    def _open_in_worker(self, conn: Connection) -> None:
        error: BaseException | None = None
        try:
            conn.client.reconnect()
        except Exception as err:
            error = err
        self._opened.append((conn, error))
        self.loop.wake()

    def _take_opened(self) -> None:
        while self._opened:
            conn, error = self._opened.popleft()
            self._in_flight -= 1
            if error is not None:
                conn.connecting = False
                self._failed(conn, str(classify_connect_error(self.settings, error)))
                continue
            self.loop.adopt(conn.client)
            conn.attempt_id += 1
            deadline = time.monotonic() + self.settings.connect_timeout
            self.loop.call_at(deadline, partial(self._connack_overdue, conn, conn.attempt_id))

    def _connack_overdue(self, conn: Connection, attempt: int) -> None:
        if conn.connecting and conn.attempt_id == attempt and not self.closing:
            conn.connecting = False
            sock = conn.client.socket()
            if sock is not None:
                self.loop.forget(conn.client, sock)
                with contextlib.suppress(OSError):
                    sock.close()
            self._failed(
                conn,
                f"MQTT broker {self.settings.address}: no CONNACK within "
                f"{self.settings.connect_timeout:g}s",
            )

    def _failed(self, conn: Connection, line: str) -> None:
        self.accounts.result.connect_failures += 1
        self.accounts.error(line)
        self._retry_later(conn)

    def _retry_later(self, conn: Connection) -> None:
        if self.closing:
            return
        delay = backoff_delay(
            conn.attempts, self.settings.reconnect_min_delay, self.settings.reconnect_max_delay
        )
        conn.attempts += 1
        delay *= self.random.uniform(0.8, 1.2)
        self.loop.call_at(time.monotonic() + delay, lambda: self._enqueue(conn))

    def _on_connect(self, _client, conn: Connection, _flags, reason_code, properties) -> None:
        conn.connecting = False
        if reason_code.is_failure:
            self._failed(
                conn, f"MQTT broker {self.settings.address} refused the connection: {reason_code}"
            )
            return
        conn.connected = True
        conn.attempts = 0
        conn.ups += 1
        self.up += 1
        self.connects += 1
        self.down_since = None
        self.on_up(conn, properties)
        self.drop_if_idle(conn)  # held while its connect was under way

    def _on_disconnect(self, _client, conn: Connection, _flags, reason_code, _properties) -> None:
        was_connected = conn.connected
        conn.connected = False
        conn.connecting = False
        if was_connected:
            self.up -= 1
            if not self.up:
                self.down_since = time.monotonic()
        self.on_down(conn)
        if self.closing or conn.held:
            return
        if was_connected:
            self.accounts.error(f"MQTT connection lost ({reason_code}); reconnecting")
        else:
            self.accounts.result.connect_failures += 1
            self.accounts.error(
                f"MQTT broker {self.settings.address} closed the connection before CONNACK"
            )
        self._retry_later(conn)

    def unreachable_for(self, now: float) -> float:
        """Seconds since the shard last held any broker connection (0 while one is up, or
        while a connection is held on purpose)."""
        return 0.0 if self.down_since is None or self.held else now - self.down_since

    def close(self) -> None:
        """Stop connecting; sockets that workers opened meanwhile join the loop to be closed."""
        self.closing = True
        if self._connector is not None:
            self._connector.shutdown(wait=True, cancel_futures=True)
            for conn, error in self._opened:
                if error is None:
                    self.loop.adopt(conn.client)  # so it is disconnected below
            self._opened.clear()

    def disconnect_all(self) -> None:
        """Send DISCONNECT on every open connection, wait briefly for it to go out, close."""
        clients = [conn.client for conn in self.all if conn.client is not None]
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
