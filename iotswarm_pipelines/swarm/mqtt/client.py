"""paho's MQTT client with fewer, larger socket reads and writes; paho still does the protocol.

paho reads each packet piece by piece (the command byte, each remaining-length byte, then the
rest): three `recv` calls for every 4-byte PUBACK, the packet a QoS 1 swarm receives most, and
as many for every message the verifier receives. It also writes each queued packet with its own
`send`. `SwarmClient` reads whatever has arrived with one `recv` and hands paho the pieces
from that buffer, joins queued QoS 1 PUBLISH packets into writes of up to 256 KB, and takes
an MQTT 3.1.1 PUBACK's message ID without paho's per-packet reason code and properties objects
(MQTT 5 PUBACKs, which may carry them, go through paho's decoder). paho still builds and
parses every other packet, keeps every unacknowledged message and re-sends
it after a reconnect (it rebuilds its write queue then, so a joined write never outlives its
connection). QoS 0 packets are left alone: paho marks each one sent when its own write ends.

Callers waiting for the socket to become readable must first hand paho what is `buffered`
(the event loop does): bytes already read do not wake a poll.
"""

from __future__ import annotations

import struct
from collections import deque

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

READ_SIZE = 65536
WRITE_SIZE = 1 << 18
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)  # what paho reports for any MQTT 3.1.1 PUBACK
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)


class SwarmClient(paho.Client):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = b""
        self._read_pos = 0
        self._read_sock: object = None  # the socket the buffer was read from

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_sock is not self._sock or self._read_pos >= len(self._read_buffer):
            data = super()._sock_recv(READ_SIZE)  # BlockingIOError when nothing has arrived
            self._read_buffer, self._read_pos, self._read_sock = data, 0, self._sock
            if not data:
                return data  # end of stream: paho reports the connection lost
        start = self._read_pos
        self._read_pos = min(start + bufsize, len(self._read_buffer))
        return self._read_buffer[start : self._read_pos]

    @property
    def buffered(self) -> bool:
        """Bytes of the current connection read from the socket but not yet handed to paho."""
        return self._read_sock is self._sock and self._read_pos < len(self._read_buffer)

    def _handle_pubackcomp(self, cmd):
        """An MQTT 3.1.1 PUBACK is just a message ID: acknowledge it without building a reason
        code and a properties object for each (paho's decoder does, whatever the protocol)."""
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol == paho.MQTTv5 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        (mid,) = struct.unpack("!H", packet)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _PUBACK_SUCCESS, _NO_PROPERTIES)
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def loop_write(self) -> paho.MQTTErrorCode:
        if len(self._out_packet) > 1:
            self._out_packet = _joined(self._out_packet)
        return super().loop_write()


def _joinable(packet: dict) -> bool:
    """A whole QoS 1 PUBLISH: nothing in paho happens when its write ends."""
    return packet["pos"] == 0 and packet["qos"] == 1 and packet["command"] & 0xF0 == paho.PUBLISH


def _joined(packets: deque) -> deque:
    """The write queue with runs of joinable packets joined into packets of <= WRITE_SIZE."""
    queue: deque = deque()
    run: list[dict] = []
    size = 0

    def close_run() -> None:
        if len(run) == 1:
            queue.append(run[0])
        elif run:
            data = b"".join(p["packet"] for p in run)
            queue.append({**run[-1], "packet": data, "to_process": len(data), "pos": 0})
        run.clear()

    for packet in packets:
        if not _joinable(packet):
            close_run()
            size = 0
            queue.append(packet)
            continue
        if run and size + packet["to_process"] > WRITE_SIZE:
            close_run()
            size = 0
        run.append(packet)
        size += packet["to_process"]
    close_run()
    return queue
