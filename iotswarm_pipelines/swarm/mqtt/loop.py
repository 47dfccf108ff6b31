"""One selector loop driving many paho clients through their socket callbacks.

paho's `loop_start()` costs a thread per client; at 20,000 connections that is neither memory
nor the GIL can afford. Here each client tells the loop when its socket opens, closes and has
bytes to write, and the loop calls `loop_read`/`loop_write`/`loop_misc` when the socket is ready.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import time
from collections.abc import Callable

import paho.mqtt.client as paho

MISC_INTERVAL = 1.0  # keep-alive checks (PINGREQ) for every connected client


class EventLoop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._clients: dict[paho.Client, object] = {}
        self._next_misc = time.monotonic() + MISC_INTERVAL
        self.on_written: Callable[[paho.Client], None] | None = None
        """Called after a socket took more bytes: QoS 0 sends are done once written."""

    def attach(self, client: paho.Client) -> None:
        """Route the client's socket through this loop (before it connects)."""
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def _on_open(self, client: paho.Client, _userdata, sock) -> None:
        self._selector.register(sock, selectors.EVENT_READ, client)
        self._clients[client] = sock

    def _on_close(self, client: paho.Client, _userdata, sock) -> None:
        self._clients.pop(client, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _on_register_write(self, client: paho.Client, _userdata, sock) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _on_unregister_write(self, client: paho.Client, _userdata, sock) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(sock, selectors.EVENT_READ, client)

    @property
    def open_sockets(self) -> int:
        return len(self._clients)

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), callback))

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def run_once(self, timeout: float) -> None:
        """Wait up to `timeout` for socket events, handle them, then run the timers that are due."""
        if self._timers:
            timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
        for key, mask in self._selector.select(max(0.0, timeout)):
            client: paho.Client = key.data
            sock = key.fileobj
            if mask & selectors.EVENT_READ:
                client.loop_read()
                # TLS may hold decrypted records the selector cannot see.
                pending = getattr(sock, "pending", None)
                while pending is not None and client.socket() is sock and pending() > 0:
                    client.loop_read()
            if mask & selectors.EVENT_WRITE and client.socket() is sock:
                client.loop_write()
                if self.on_written is not None:
                    self.on_written(client)
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            callback()
        if now >= self._next_misc:
            self._next_misc = now + MISC_INTERVAL
            for client in list(self._clients):
                client.loop_misc()

    def close(self) -> None:
        self._selector.close()
