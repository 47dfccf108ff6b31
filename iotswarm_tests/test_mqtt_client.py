"""SwarmClient's joined writes: the same bytes in the same order, QoS 0 and partial writes
left for paho to finish one by one."""

from __future__ import annotations

from collections import deque

import paho.mqtt.client as paho

from iotswarm_pipelines.swarm.mqtt.client import WRITE_SIZE, _joined


def packet(command: int, qos: int, size: int, fill: bytes, pos: int = 0) -> dict:
    data = fill * size
    return {"command": command, "mid": 1, "qos": qos, "pos": pos,
            "to_process": size - pos, "packet": data, "info": None}  # fmt: skip


def test_qos1_publishes_are_joined_in_order_and_nothing_else_is():
    queue = deque(
        [
            packet(paho.PUBLISH | 2, 1, 100, b"a", pos=40),  # half written: paho finishes it
            packet(paho.PUBLISH | 2, 1, 100, b"b"),
            packet(paho.PUBLISH | 2, 1, 100, b"c"),
            packet(paho.PUBLISH, 0, 100, b"d"),  # QoS 0: paho marks it sent when written
            packet(paho.PUBLISH | 2, 1, 100, b"e"),
            packet(paho.PUBACK, 0, 4, b"f"),
        ]
    )
    joined = _joined(queue)
    assert [p["packet"][:1] for p in joined] == [b"a", b"b", b"d", b"e", b"f"]
    assert joined[1]["packet"] == b"b" * 100 + b"c" * 100
    assert joined[1]["to_process"] == 200 and joined[1]["pos"] == 0
    assert joined[0] is queue[0] and joined[2] is queue[3]
    written = b"".join(p["packet"][p["pos"] :] for p in joined)
    assert written == b"".join(p["packet"][p["pos"] :] for p in queue)


def test_joined_writes_stay_within_the_write_size():
    size = WRITE_SIZE // 3 + 1
    queue = deque(packet(paho.PUBLISH | 2, 1, size, bytes([65 + k])) for k in range(7))
    joined = _joined(queue)
    assert [p["to_process"] for p in joined] == [2 * size, 2 * size, 2 * size, size]
    assert b"".join(p["packet"] for p in joined) == b"".join(p["packet"] for p in queue)
