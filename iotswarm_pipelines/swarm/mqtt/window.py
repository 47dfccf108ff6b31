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
- A connection publishes at most `PUBLISHES_PER_TURN` messages per loop turn, then waits for
  the next turn. Filling a whole window at once made a turn last as long as 50 windows of
  15 KB sends (a tenth of a second), and the loop adopts opened sockets, reads CONNACKs and
  PUBACKs and runs timers only between turns: 50 per-device connections took 0.35 s to come
  up instead of 0.03 s, and a 20,000-message run lost a third of its rate to it.
- Scenario phases (`Scenario`): a device in an outage owes one message per cycle (its backlog)
  while its connection is held closed; back online, the backlog goes out first, in order
  (the stream hands out rows in order, so a backlog send is simply a larger next message), then
  its live cycle. A device is not finished while it owes a backlog. Sends and reconnects are
  counted per phase (ramp, steady, outage, catch-up, after), whose boundaries are marked in
  wall-clock time for the report.
"""

from __future__ import annotations

import random
import time
from collections import deque
from functools import partial

import paho.mqtt.client as paho

from iotswarm_pipelines.swarm.mqtt.accounting import Accounts
from iotswarm_pipelines.swarm.mqtt.connections import Connection, Connections
from iotswarm_pipelines.swarm.mqtt.loop import EventLoop
from iotswarm_pipelines.swarm.mqtt.types import DeviceStream, Scenario, Schedule, phase_of
from iotswarm_pipelines.swarm.mqtt.verifier import Verifier

QOS1_WINDOW = 200  # unacknowledged QoS 1 publishes per connection (the engine's, not paho's)
QOS0_WINDOW = 500  # QoS 0 publishes queued but not yet written to the socket, per connection
SHARD_WINDOW = 25_000  # the same, over all of a shard's connections together
PUBLISHES_PER_TURN = 8  # per connection and loop turn, so turns stay short (see the docstring)


def connection_window(qos: int, connections: int) -> int:
    """A connection's window: the per-connection one, or its share of the shard's if smaller.

    Every unfinished publish holds its payload (paho keeps a QoS 1 message for re-sending), so
    a flood over 20,000 per-device connections with full windows would hold 4,000,000 SOILMET
    payloads, 60 GB, whenever the broker fell behind. Sharing `SHARD_WINDOW` bounds a shard to
    about 375 MB of them; a device sending one message a minute never notices.
    """
    per_connection = QOS1_WINDOW if qos else QOS0_WINDOW
    return max(1, min(per_connection, SHARD_WINDOW // max(1, connections)))


class Device:
    __slots__ = (
        "acked_mark",
        "backlog",
        "conn",
        "cycles",
        "done",
        "in_flight",
        "offline",
        "outage",
        "stream",
        "topic",
    )

    def __init__(self, stream: DeviceStream, conn: Connection, outage: bool) -> None:
        self.in_flight: deque[list] = deque()  # [mark, acknowledged] per unacknowledged publish
        self.acked_mark: object = None  # the mark of the newest message acknowledged in order
        self.stream = stream
        self.topic = stream.topic
        self.conn = conn
        self.cycles = 0
        self.done = False
        self.outage = outage  # goes offline in the scenario's outage
        self.offline = False
        self.backlog = 0  # cycles logged offline, not yet sent


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
        scenario: Scenario,
    ) -> None:
        self.qos = qos
        self.scenario = scenario
        self.connections: Connections | None = None  # set by the shard once it has them
        self.phase = "steady"
        self._joining = 0  # devices of the ramp not yet joined
        self._outage_left = 0  # outage devices not yet back online
        self._backlog_owed = 0
        self._backlog_mids: set[tuple[int, int]] = set()  # (connection, mid) awaiting PUBACK
        self.schedule = schedule
        self.loop = loop
        self.accounts = accounts
        self.random = rng
        self.verifier = verifier
        self.devices: list[Device] = []
        self.active = 0  # devices not yet finished
        self.stopping = False
        self.dirty: set[Connection] = set()  # connections to pump on the next turn
        self.moved: set[Device] = set()  # devices that sent or were acknowledged this turn
        self._marks: dict[tuple[int, int], tuple[Device, list]] = {}  # (conn, mid) -> entry
        if not qos:
            loop.on_written = self._on_written

    def add(self, stream: DeviceStream, conn: Connection) -> None:
        outage = stream.device_id in self.scenario.outage_devices
        self.devices.append(Device(stream, conn, outage))
        self._outage_left += outage
        self.active += 1

    @property
    def on_publish(self):
        """paho's PUBACK callback for QoS 1; QoS 0 is reaped without paho's per-packet call."""
        return self._on_publish if self.qos else None

    def start(self, delay_start: float, hold_joining: bool) -> None:
        """Schedule every device's first send; a device of a ramp joins later, its connection
        (``hold_joining``: its own) held closed until then."""
        start = time.monotonic()
        joins = self.scenario.join_after
        for device in self.devices:
            first = start + (self.random.uniform(0, delay_start) if delay_start > 0 else 0.0)
            join = joins.get(device.stream.device_id, 0.0)
            if join > 0:
                self._joining += 1
                if hold_joining and self.connections is not None:
                    self.connections.hold(device.conn)
                joined = partial(self._join, device, first + join, hold_joining)
                self.loop.call_at(start + join, joined)
            else:
                self.loop.call_at(first, lambda device=device: self._due(device))
        self._set_phase()

    # scenario phases ---------------------------------------------------------------------

    def _mark(self, name: str) -> None:
        self.accounts.result.phase_marks.setdefault(name, time.time())
        self._set_phase()

    def _set_phase(self) -> None:
        self.phase = phase_of(self.accounts.result.phase_marks, self._joining > 0)

    def _join(self, device: Device, first: float, hold_joining: bool) -> None:
        if hold_joining and self.connections is not None:
            self.connections.release(device.conn)
        self._joining -= 1
        if not self._joining:
            self._mark("joined")
        self.loop.call_at(first, lambda: self._due(device))

    def _go_offline(self, device: Device) -> None:
        device.offline = True
        self._mark("outage_start")
        if self.connections is not None:
            self.connections.hold(device.conn)

    def _back_online(self, device: Device) -> None:
        device.offline = False
        self._outage_left -= 1
        self._mark("outage_end")
        if self.connections is not None:
            self.connections.release(device.conn)

    def _check_drained(self) -> None:
        if (
            self.phase == "catch-up"
            and not self._outage_left
            and not self._backlog_owed
            and not self._backlog_mids
        ):
            self._mark("drained")

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
            return sum(max_cycles - d.cycles + d.backlog for d in self.devices if not d.done)
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
        if conn.ups > 1:
            reconnects = self.accounts.result.phase_reconnects
            reconnects[self.phase] = reconnects.get(self.phase, 0) + 1
        if conn.ready:
            self.dirty.add(conn)

    def disconnected(self, conn: Connection) -> None:
        if self.qos == 0:
            self._reap_written(conn)
            self.accounts.result.failed += len(conn.outstanding)
            conn.outstanding.clear()

    def _on_publish(self, _client, conn: Connection, mid, _reason_code, _properties) -> None:
        if mid in conn.outstanding:
            sent_at: float = conn.outstanding.pop(mid)  # type: ignore[call-arg,assignment]
            self.accounts.result.acknowledged += 1
            latencies = self.accounts.publish_latencies
            if latencies is not None:
                latencies.append(time.time() - sent_at)
            marked = self._marks.pop((id(conn), mid), None)
            if marked is not None:
                self._acknowledge(*marked)
            if conn.ready:
                self.dirty.add(conn)
            if self._backlog_mids:
                self._backlog_mids.discard((id(conn), mid))
                self._check_drained()
            if conn.held and self.connections is not None:
                self.connections.drop_if_idle(conn)

    def _acknowledge(self, device: Device, entry: list) -> None:
        """A device's position moves only over a run of acknowledged messages from its oldest
        unacknowledged one, so a resume never skips a row the broker does not have."""
        entry[1] = True
        in_flight = device.in_flight
        moved = False
        while in_flight and in_flight[0][1]:
            device.acked_mark = in_flight.popleft()[0]
            moved = True
        if moved:
            self.moved.add(device)

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
            if conn.held and self.connections is not None:
                self.connections.drop_if_idle(conn)

    # device cycles -----------------------------------------------------------------------

    def _due(self, device: Device) -> None:
        if self.stopping or device.done:
            return
        if device.outage:
            cycle = device.cycles - self.scenario.outage_start_cycle
            if 0 <= cycle < self.scenario.outage_cycles:
                if not device.offline:
                    self._go_offline(device)
                device.backlog += 1  # this cycle's row is logged, to be sent on reconnecting
                self._backlog_owed += 1
                self._cycle_done(device, self.scenario.cadence_seconds, timer=True)
                return
            if device.offline:
                self._back_online(device)
        probability = self.schedule.no_send_probability
        if probability and self.random.random() * 100.0 < probability:
            message = device.stream.next_message()
            if message is None:
                self._finish(device)
                return
            self.accounts.result.skipped += 1
            self._cycle_done(device, message.wait_after, timer=True)
            return
        conn = device.conn
        conn.ready.append(device)
        self.dirty.add(conn)

    def _finish(self, device: Device) -> None:
        if not device.done:
            device.done = True
            self.active -= 1

    def _cycle_done(self, device: Device, wait_after: float, timer: bool = False) -> None:
        device.cycles += 1
        if self.schedule.max_cycles and device.cycles >= self.schedule.max_cycles:
            self._finish(device)
        elif wait_after <= 0 and not timer:
            self._due(device)
        else:  # a timer, also for back-to-back skips or offline cycles, which would recurse
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
        if not conn.connected or conn.held or (verifier is not None and not verifier.ready):
            return  # (held: closing on purpose, e.g. a device rebooting)
        result = self.accounts.result
        timeline = self.accounts.timeline
        qos = self.qos
        outstanding = conn.outstanding
        published = False
        phase_messages = result.phase_messages
        budget = PUBLISHES_PER_TURN
        while ready and len(outstanding) < conn.window:
            if not budget:
                self.dirty.add(conn)  # the rest next turn
                break
            budget -= 1
            if not conn.bucket.take(now):
                wake = now + conn.bucket.wait_time(now)
                if conn.wake_at <= now:
                    conn.wake_at = wake
                    self.loop.call_at(wake, lambda: self.dirty.add(conn))
                break
            device = ready.popleft()
            backlog = min(device.backlog, self.scenario.backlog_batch)
            if backlog:  # owed rows first, several cycles' rows to a message if batched
                message = device.stream.next_message(backlog * self.scenario.rows_per_message)
                device.backlog -= backlog
                self._backlog_owed -= backlog
                ready.appendleft(device)  # its live cycle (or more backlog) follows
            else:
                message = device.stream.next_message()
            if message is None:
                self._finish(device)
                continue
            sent_at = time.time()
            result.sent += 1
            phase_messages[self.phase] = phase_messages.get(self.phase, 0) + 1
            timeline.sent(sent_at)
            if client is not None:
                if verifier is not None:
                    verifier.expect(device.topic, message.payload, sent_at)
                info = client.publish(device.topic, message.payload, qos)
                if qos:
                    outstanding[info.mid] = sent_at  # type: ignore[assignment]  # re-sent if need be
                    if message.mark is not None:
                        entry = [message.mark, False]
                        device.in_flight.append(entry)
                        self._marks[(id(conn), info.mid)] = (device, entry)
                    if backlog:
                        self._backlog_mids.add((id(conn), info.mid))
                elif info.rc == paho.MQTT_ERR_SUCCESS:
                    outstanding.append(info)
                else:
                    result.failed += 1
                published = True
            if (client is None or not qos) and message.mark is not None:
                device.acked_mark = message.mark  # QoS 0 and dry runs: no acknowledgement comes
            self.moved.add(device)  # its newest row sent moved
            if backlog:
                result.backlog_messages += 1
                if not self._backlog_owed:
                    self._check_drained()
            else:
                self._cycle_done(device, message.wait_after)
            if self.stopping:
                ready.clear()
        if published and conn.connected:
            client.loop_write()
            if not qos:
                self._reap_written(conn)
                if ready and len(outstanding) < conn.window:
                    self.dirty.add(conn)
