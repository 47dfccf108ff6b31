"""Matching what the broker delivers to what the shard sent: delivered, lost, duplicated, latency.

Arrivals are matched by (topic, payload hash) in send order, so identical payloads sent twice on
one topic are two expected arrivals. A message that arrives more often than it was sent is a
duplicate (a QoS 1 resend after a lost PUBACK, typically after a reconnect).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence

import paho.mqtt.client as paho

from iotswarm_pipelines.swarm.mqtt.loop import EventLoop
from iotswarm_pipelines.swarm.mqtt.settings import MqttSettings, new_client

SUBSCRIBE_BATCH = 200  # topics per SUBSCRIBE packet
RESERVOIR_SIZE = 100_000


class LatencyReservoir:
    """A uniform sample of at most `size` latencies (algorithm R), so long runs stay bounded."""

    def __init__(self, size: int = RESERVOIR_SIZE, seed: int = 0) -> None:
        self.size = size
        self.samples: list[float] = []
        self.seen = 0
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.samples) < self.size:
            self.samples.append(value)
        else:
            slot = self._random.randrange(self.seen)
            if slot < self.size:
                self.samples[slot] = value


class Timeline:
    """Per-second counts since the start of the shard: sent, delivered, summed latency."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.seconds: dict[int, list[float]] = {}

    def _slot(self, now: float) -> list[float]:
        second = int(now - self.start)
        slot = self.seconds.get(second)
        if slot is None:
            slot = self.seconds[second] = [0, 0, 0.0]
        return slot

    def sent(self, now: float) -> None:
        self._slot(now)[0] += 1

    def delivered(self, now: float, latency_ms: float) -> None:
        slot = self._slot(now)
        slot[1] += 1
        slot[2] += latency_ms

    def rows(self) -> list[tuple[int, int, int, float]]:
        return [
            (second, int(s), int(d), round(total / d, 3) if d else 0.0)
            for second, (s, d, total) in sorted(self.seconds.items())
        ]


class Verifier:
    """A subscriber on the shard's own topics, driven by the shard's event loop."""

    def __init__(
        self,
        shard: int,
        topics: Sequence[str],
        settings: MqttSettings,
        loop: EventLoop,
        timeline: Timeline,
        seed: int = 0,
        on_lost: Callable[[], None] | None = None,
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
        self._pending_subacks: set[int] = set()
        self._on_lost = on_lost
        client_id = f"iotswarm-verify-{shard}-{uuid.uuid4().hex[:8]}"
        self.client = new_client(settings, client_id, inflight=0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        loop.attach(self.client)

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            self.errors.append(f"verifier refused by {self.settings.address}: {reason_code}")
            return
        self.connected = True
        self._pending_subacks.clear()
        qos = self.settings.qos
        for i in range(0, len(self.topics), SUBSCRIBE_BATCH):
            batch = [(topic, qos) for topic in self.topics[i : i + SUBSCRIBE_BATCH]]
            _, mid = client.subscribe(batch)
            self._pending_subacks.add(mid)
        if not self._pending_subacks:
            self.ready = True

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _properties) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            self.errors.append(f"verifier subscription refused by the broker: {failed[0]}")
        self._pending_subacks.discard(mid)
        if not self._pending_subacks and self.connected:
            self.ready = True

    def _on_disconnect(self, _client, _userdata, _flags, _reason_code, _properties) -> None:
        self.connected = False
        self.ready = False
        if self._on_lost is not None:
            self._on_lost()

    def expect(self, topic: str, payload: bytes, sent_at: float) -> None:
        key = (topic, hash(payload))
        queue = self.expected.get(key)
        if queue is None:
            queue = self.expected[key] = deque()
        queue.append(sent_at)
        self.outstanding += 1

    def _on_message(self, _client, _userdata, message: paho.MQTTMessage) -> None:
        if message.retain:
            return  # left on the topic by an earlier run, not sent by this one
        now = time.time()
        key = (message.topic, hash(message.payload))
        queue = self.expected.get(key)
        if not queue:
            self.duplicated += 1
            return
        sent_at = queue.popleft()
        if not queue:
            del self.expected[key]
        self.outstanding -= 1
        self.delivered += 1
        latency_ms = (now - sent_at) * 1000.0
        self.latencies.add(latency_ms)
        self.timeline.delivered(now, latency_ms)

    def connect(self) -> None:
        self.client.reconnect()

    def disconnect(self) -> None:
        if self.connected:
            self.client.disconnect()
