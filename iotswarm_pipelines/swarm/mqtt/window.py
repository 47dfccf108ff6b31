"""The publish window: which device sends next on a connection, and when a send is done.

Decisions:
- Each device fetches its next message only when its connection can publish it, so a stop
  never throws away a consumed message (the data modes' saved positions stay exact).
- Per connection at most `window` publishes are unfinished: QoS 1 until PUBACK (paho's own
  inflight limit is off, it rescans every message on each PUBACK), QoS 0 until paho has written
  the packet to the socket (reaped in order, without paho's per-packet callback).
- paho keeps unacknowledged QoS 1 messages across reconnects and re-sends them (with the DUP
  flag) after CONNACK whatever the session flag, so there is no queue of our own; QoS 0
  messages not yet written when a connection drops are gone (that is QoS 0) and count as failed.
- With the verifier on, nothing is published until it is subscribed on its current connection.
"""

from __future__ import annotations

import random
import time

import paho.mqtt.client as paho

from iotswarm_pipelines.swarm.mqtt.accounting import Accounts
from iotswarm_pipelines.swarm.mqtt.connections import Connection
from iotswarm_pipelines.swarm.mqtt.loop import EventLoop
from iotswarm_pipelines.swarm.mqtt.types import DeviceStream, Schedule
from iotswarm_pipelines.swarm.mqtt.verifier import Verifier

QOS1_WINDOW = 200  # unacknowledged QoS 1 publishes per connection (the engine's, not paho's)
QOS0_WINDOW = 500  # QoS 0 publishes queued but not yet written to the socket, per connection


class Device:
    __slots__ = ("conn", "cycles", "done", "stream", "topic")

    def __init__(self, stream: DeviceStream, conn: Connection) -> None:
        self.stream = stream
        self.topic = stream.topic
        self.conn = conn
        self.cycles = 0
        self.done = False


class Publisher:
    """Runs the devices' cycles and fills each connection's window; `pump_dirty` does the
    publishing for the connections whose state changed since the last turn."""

    def __init__(
        self,
        qos: int,
        schedule: Schedule,
        loop: EventLoop,
        accounts: Accounts,
        rng: random.Random,
        verifier: Verifier | None,
    ) -> None:
        self.qos = qos
        self.window = QOS1_WINDOW if qos else QOS0_WINDOW
        self.schedule = schedule
        self.loop = loop
        self.accounts = accounts
        self.random = rng
        self.verifier = verifier
        self.devices: list[Device] = []
        self.active = 0  # devices not yet finished
        self.stopping = False
        self.dirty: set[Connection] = set()  # connections to pump on the next turn
        if not qos:
            loop.on_written = self._on_written

    def add(self, stream: DeviceStream, conn: Connection) -> None:
        self.devices.append(Device(stream, conn))
        self.active += 1

    @property
    def on_publish(self):
        """paho's PUBACK callback for QoS 1; QoS 0 is reaped without paho's per-packet call."""
        return self._on_publish if self.qos else None

    def start(self, delay_start: float) -> None:
        start = time.monotonic()
        for device in self.devices:
            first = start + (self.random.uniform(0, delay_start) if delay_start > 0 else 0.0)
            self.loop.call_at(first, lambda device=device: self._due(device))

    def stop(self, conns: list[Connection]) -> None:
        """No new publishes; what the devices still owed is counted as unsent."""
        self.stopping = True
        self.accounts.result.unsent = self._unsent(conns)
        for conn in conns:
            conn.ready.clear()

    def _unsent(self, conns: list[Connection]) -> int:
        """The cycles left of unfinished devices; without a cycle limit, the messages due."""
        max_cycles = self.schedule.max_cycles
        if max_cycles:
            return sum(max_cycles - d.cycles for d in self.devices if not d.done)
        return sum(len(conn.ready) for conn in conns)

    def unfinished(self, conns: list[Connection]) -> bool:
        return any(conn.outstanding for conn in conns)

    def give_up(self, conns: list[Connection], drain_seconds: float) -> None:
        """After the drain window: QoS 1 publishes still without PUBACK count as failed."""
        for conn in conns:
            if self.qos and conn.outstanding:
                self.accounts.result.failed += len(conn.outstanding)
                self.accounts.error(
                    f"{len(conn.outstanding)} QoS 1 messages unacknowledged after the "
                    f"{drain_seconds:g}s drain window"
                )
                conn.outstanding.clear()

    # connection events -------------------------------------------------------------------

    def connected(self, conn: Connection, properties) -> None:
        receive_maximum = getattr(properties, "ReceiveMaximum", None) if properties else None
        if self.qos and receive_maximum:
            conn.window = min(conn.window, receive_maximum)
        if conn.ready:
            self.dirty.add(conn)

    def disconnected(self, conn: Connection) -> None:
        if self.qos == 0:
            self._reap_written(conn)
            self.accounts.result.failed += len(conn.outstanding)
            conn.outstanding.clear()

    def _on_publish(self, _client, conn: Connection, mid, _reason_code, _properties) -> None:
        if mid in conn.outstanding:
            conn.outstanding.discard(mid)
            self.accounts.result.acknowledged += 1
            if conn.ready:
                self.dirty.add(conn)

    def _reap_written(self, conn: Connection) -> None:
        """Count QoS 0 publishes paho has written (in order) as done."""
        infos = conn.outstanding
        result = self.accounts.result
        while infos:
            try:
                if not infos[0].is_published():
                    break
                result.acknowledged += 1
            except (RuntimeError, ValueError):  # dropped by a reconnect before it was written
                result.failed += 1
            infos.popleft()

    def _on_written(self, client: paho.Client) -> None:
        conn: Connection = client.user_data_get()
        if conn is not None and conn.outstanding:
            before = len(conn.outstanding)
            self._reap_written(conn)
            if conn.ready and len(conn.outstanding) < before:
                self.dirty.add(conn)

    # device cycles -----------------------------------------------------------------------

    def _due(self, device: Device) -> None:
        if self.stopping or device.done:
            return
        probability = self.schedule.no_send_probability
        if probability and self.random.random() * 100.0 < probability:
            message = device.stream.next_message()
            if message is None:
                self._finish(device)
                return
            self.accounts.result.skipped += 1
            self._cycle_done(device, message.wait_after, skipped=True)
            return
        conn = device.conn
        conn.ready.append(device)
        self.dirty.add(conn)

    def _finish(self, device: Device) -> None:
        if not device.done:
            device.done = True
            self.active -= 1

    def _cycle_done(self, device: Device, wait_after: float, skipped: bool = False) -> None:
        device.cycles += 1
        if self.schedule.max_cycles and device.cycles >= self.schedule.max_cycles:
            self._finish(device)
        elif wait_after <= 0 and not skipped:
            self._due(device)
        else:  # a timer, also for back-to-back skips, which would otherwise recurse
            self.loop.call_at(time.monotonic() + wait_after, lambda: self._due(device))

    # publishing --------------------------------------------------------------------------

    def pump_dirty(self, now: float) -> None:
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            self._pump(conn, now)

    def _pump(self, conn: Connection, now: float) -> None:
        """Publish the connection's due devices while its window and rate cap allow."""
        ready = conn.ready
        client = conn.client
        verifier = self.verifier
        if not conn.connected or (verifier is not None and not verifier.ready):
            return
        result = self.accounts.result
        timeline = self.accounts.timeline
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
