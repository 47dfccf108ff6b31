"""A TLS front on loopback that behaves like AWS IoT Core on port 443: it speaks MQTT only to
clients offering the ALPN protocol ``x-amzn-mqtt-ca`` and closes every other connection right
after the handshake; accepted connections are forwarded byte for byte to a plain Mosquitto.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass, field

IOT_CORE_ALPN = "x-amzn-mqtt-ca"


@dataclass
class AlpnProxy:
    cert_file: str
    key_file: str
    upstream: tuple[str, int]
    accepted: int = 0
    refused: int = 0
    _listener: socket.socket = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def start(self) -> AlpnProxy:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(self.cert_file, self.key_file)
        self._context.set_alpn_protocols([IOT_CORE_ALPN])
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        if tls.selected_alpn_protocol() != IOT_CORE_ALPN:
            with self._lock:
                self.refused += 1
            tls.close()  # IoT Core does not speak MQTT on 443 without the ALPN
            return
        with self._lock:
            self.accepted += 1
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            tls.close()
            return
        threading.Thread(target=_pump, args=(upstream, tls), daemon=True).start()
        _pump(tls, upstream)


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy until either side closes, then close both (the other pump then ends too)."""
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.close()
