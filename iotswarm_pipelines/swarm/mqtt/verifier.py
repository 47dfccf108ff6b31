"""Matching what the broker delivers to what the shard sent: delivered, lost, duplicated, latency.

Arrivals are matched by (topic, payload hash) in send order, so identical payloads sent twice on
one topic are two expected arrivals. A message that arrives more often than it was sent is a
duplicate (a QoS 1 re-send after a lost PUBACK, typically around a reconnect).

The verifier runs its own loop on its own thread: brokers let only a few unacknowledged
messages travel to one subscriber (Mosquitto: 20), so its PUBACKs must not wait for the
publishers' loop to come round, and its receive times must not include that wait either.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence

import paho.mqtt.client as paho

from iotswarm_pipelines.swarm.mqtt.loop import EventLoop
from iotswarm_pipelines.swarm.mqtt.rate import backoff_delay
from iotswarm_pipelines.swarm.mqtt.settings import MqttSettings, classify_connect_error, new_client

SUBSCRIBE_BATCH = 200  # topics per SUBSCRIBE packet
RESERVOIR_SIZE = 100_000
MAX_ERRORS = 10


class LatencyReservoir:
    """A uniform sample of at most `size` latencies (algorithm R), so long runs stay bounded;
    each kept with its arrival time, so a report can take percentiles per phase."""

    def __init__(self, size: int = RESERVOIR_SIZE, seed: int = 0) -> None:
        self.size = size
        self.samples: list[float] = []
        self.times: list[float] = []
        self.seen = 0
        self._random = random.Random(seed)

    def add(self, value: float, at: float = 0.0) -> None:
        self.seen += 1
        if len(self.samples) < self.size:
            self.samples.append(value)
            self.times.append(at)
        else:
            slot = self._random.randrange(self.seen)
            if slot < self.size:
                self.samples[slot] = value
                self.times[slot] = at


class Timeline:
    """Per-second counts since the shard started: sent (publisher thread), delivered and
    summed latency (verifier thread); each thread writes only its own dict."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.sent_per_second: dict[int, int] = {}
        self.delivered_per_second: dict[int, list[float]] = {}

    def sent(self, now: float) -> None:
        second = int(now - self.start)
        self.sent_per_second[second] = self.sent_per_second.get(second, 0) + 1

    def delivered(self, now: float, latency_ms: float) -> None:
        second = int(now - self.start)
        slot = self.delivered_per_second.get(second)
        if slot is None:
            self.delivered_per_second[second] = [1, latency_ms]
        else:
            slot[0] += 1
            slot[1] += latency_ms

    def rows(self) -> list[tuple[int, int, int, float]]:
        sent = dict(self.sent_per_second)
        delivered = {k: tuple(v) for k, v in dict(self.delivered_per_second).items()}
        rows = []
        for second in sorted(sent.keys() | delivered.keys()):
            count, total = delivered.get(second, (0, 0.0))
            mean = round(total / count, 3) if count else 0.0
            rows.append((second, sent.get(second, 0), int(count), mean))
        return rows


class Verifier:
    """A subscriber on exactly the shard's topics, on its own thread and connection."""

    def __init__(
        self,
        shard: int,
        topics: Sequence[str],
        settings: MqttSettings,
        timeline: Timeline,
        *,
        seed: int = 0,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.topics = sorted(set(topics))
        self.timeline = timeline
        self.latencies = LatencyReservoir(seed=seed)
        self.expected: dict[tuple[str, int], deque[float]] = {}
        self.outstanding = 0
        self.delivered = 0
        self.duplicated = 0
        self.ready = False  # subscribed to every topic on the current connection
        self.connected = False
        self.errors: list[str] = []
        self.connect_failures = 0  # refused, unreachable or unanswered connection attempts
        self.notify_drained = False  # call on_change when nothing is outstanding any more
        self.latency_sink: deque[float] | None = None  # seconds, for live metrics (None: off)
        self._on_change = on_change
        self._lock = threading.Lock()
        self._pending_subacks: set[int] = set()
        self._attempts = 0
        self._next_attempt = 0.0
        self._connecting = False
        self._connect_deadline = 0.0
        self._stopping = False
        self._loop = EventLoop(settings.keepalive)
        client_id = f"iotswarm-verify-{shard}-{uuid.uuid4().hex[:8]}"
        self.client = new_client(settings, client_id, inflight=0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._loop.attach(self.client)
        self._thread = threading.Thread(target=self._run, name=f"verifier-{shard}", daemon=True)

    def _error(self, line: str) -> None:
        if len(self.errors) < MAX_ERRORS and line not in self.errors:
            self.errors.append(line)

    # paho callbacks, on the verifier's thread -------------------------------------------

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        self._connecting = False
        if reason_code.is_failure:
            self.connect_failures += 1
            self._error(f"verifier refused by {self.settings.address}: {reason_code}")
            return
        self.connected = True
        self._attempts = 0
        self._pending_subacks.clear()
        qos = self.settings.qos
        for i in range(0, len(self.topics), SUBSCRIBE_BATCH):
            batch = [(topic, qos) for topic in self.topics[i : i + SUBSCRIBE_BATCH]]
            _, mid = client.subscribe(batch)
            self._pending_subacks.add(mid)
        if not self._pending_subacks:
            self._set_ready()

    def _set_ready(self) -> None:
        self.ready = True
        self._on_change()

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _properties) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            self._error(f"verifier subscription refused by the broker: {failed[0]}")
        self._pending_subacks.discard(mid)
        if not self._pending_subacks and self.connected:
            self._set_ready()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.connected = self.ready = self._connecting = False
        if self._stopping:
            return
        self._error(f"verifier lost its connection to {self.settings.address}; reconnecting")
        self._retry_later()
        self._on_change()

    def _on_message(self, _client, _userdata, message: paho.MQTTMessage) -> None:
        if message.retain:
            return  # left on the topic by an earlier run, not sent by this one
        now = time.time()
        key = (message.topic, hash(message.payload))
        with self._lock:
            queue = self.expected.get(key)
            if not queue:
                self.duplicated += 1
                return
            sent_at = queue.popleft()
            if not queue:
                del self.expected[key]
            self.outstanding -= 1
            self.delivered += 1
            drained = self.outstanding == 0
        latency_ms = (now - sent_at) * 1000.0
        if self.latency_sink is not None:
            self.latency_sink.append(now - sent_at)
        self.latencies.add(latency_ms, now)
        self.timeline.delivered(now, latency_ms)
        if drained and self.notify_drained:
            self._on_change()

    # the publisher's side ---------------------------------------------------------------

    def expect(self, topic: str, payload: bytes, sent_at: float) -> None:
        """Record a send before it is published, so its arrival always finds it."""
        key = (topic, hash(payload))
        with self._lock:
            queue = self.expected.get(key)
            if queue is None:
                queue = self.expected[key] = deque()
            queue.append(sent_at)
            self.outstanding += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._loop.wake()
        self._thread.join(timeout=10)

    # the verifier's thread --------------------------------------------------------------

    def _retry_later(self) -> None:
        delay = backoff_delay(
            self._attempts, self.settings.reconnect_min_delay, self.settings.reconnect_max_delay
        )
        self._attempts += 1
        self._next_attempt = time.monotonic() + delay

    def _run(self) -> None:
        self._loop.claim()
        while not self._stopping:
            now = time.monotonic()
            if self._connecting and now > self._connect_deadline:
                self._connecting = False  # no CONNACK in time: try again
                self.connect_failures += 1
                self._error(f"verifier got no CONNACK from {self.settings.address}; retrying")
            if not self.connected and not self._connecting and now >= self._next_attempt:
                try:
                    self.client.reconnect()
                    self._connecting = True
                    self._connect_deadline = now + self.settings.connect_timeout
                except Exception as err:
                    self.connect_failures += 1
                    self._error(str(classify_connect_error(self.settings, err)))
                    self._retry_later()
            self._loop.run_once(0.2)
        if self.client.socket() is not None:
            self.client.disconnect()
            deadline = time.monotonic() + 2.0
            while self._loop.open_sockets and time.monotonic() < deadline:
                self._loop.run_once(0.05)
        self._loop.close()
