"""An HTTP proxy on loopback that makes an S3 server fail on purpose, for retry tests.

It sits between boto3 and the moto server and answers the first ``fail_first`` requests (or every
request) with an S3 error instead of the server's answer: either before the request reaches the
server (503 SlowDown, as S3 throttles) or after it did (500, a response lost on the way back, so
the client retries something the server already stored).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}

ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message></Error>"
)


@dataclass
class FaultPlan:
    """What to break. ``fail_first=None`` fails every request."""

    fail_first: int | None = 0
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."
    after_forwarding: bool = False
    requests: int = 0
    failures: int = 0
    waited_to_continue: int = 0  # requests that asked for "100 Continue" before their body
    hang: bool = False
    """Never answer (an endpoint that accepts and then stays silent) until the proxy stops."""
    hang_after: int | None = None
    """Answer this many requests, then fall silent as ``hang`` does."""
    seen: int = 0
    hung: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set when a request first met the silence."""
    released: threading.Event = field(default_factory=threading.Event, repr=False)
    hanging: int = 0
    """Requests that met the silence (each held until the proxy stops)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def wait_hanging(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` requests are held in the silence at once."""
        with self._changed:
            return self._changed.wait_for(lambda: self.hanging >= count, timeout)

    def hold(self) -> None:
        with self._changed:
            self.hanging += 1
            self._changed.notify_all()
        self.released.wait()

    def should_hang(self) -> bool:
        with self._lock:
            self.seen += 1
            return self.hang or (self.hang_after is not None and self.seen > self.hang_after)

    def should_fail(self) -> bool:
        with self._lock:
            self.requests += 1
            if self.fail_first is None or self.failures < self.fail_first:
                self.failures += 1
                return True
            return False


def _handler(upstream: str, plan: FaultPlan) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue for boto3's PUTs

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _relay(self) -> None:
            if self.headers.get("Expect", "").lower() == "100-continue":
                plan.waited_to_continue += 1
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if plan.should_hang():
                plan.hung.set()
                plan.hold()
                self.close_connection = True
                return
            fail = plan.should_fail()
            if fail and not plan.after_forwarding:
                self._error()
                return
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            finally:
                conn.close()
            if fail:
                self._error()
                return
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP | {"content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _error(self) -> None:
            body = ERROR_BODY.format(code=plan.code, message=plan.message).encode()
            self.send_response(plan.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Handler


@contextmanager
def fault_proxy(upstream: str, plan: FaultPlan) -> Iterator[str]:
    """Serve the proxy on a free loopback port; yields its URL (an S3 ``endpoint_url``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, plan))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="s3-fault-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        plan.released.set()
        server.shutdown()
        server.server_close()
        thread.join()
