"""Getting a registry to Prometheus: a ``/metrics`` endpoint, and pushes to a Pushgateway.

Decisions:
- A push is reporting, never the work: it has a bounded timeout (``PUSH_TIMEOUT``) and a push
  that fails is one warning line, so a Pushgateway that is down never fails or stalls a run.
  Periodic pushes warn once per distinct failure, not every interval.
- ``IOTSWARM_PUSHGATEWAY`` names the Pushgateway wherever an option or config file leaves it
  out, for the swarm and the export alike.
- Pushes replace their group (``PUT``) unless asked to add (``POST``: only the metrics of the
  same names are replaced, so e.g. the last success time of an export survives a failed run).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, push_to_gateway, pushadd_to_gateway
from prometheus_client.exposition import start_http_server

PUSHGATEWAY_ENV = "IOTSWARM_PUSHGATEWAY"
PUSH_TIMEOUT = 5.0
"""Seconds a push may take (connect and answer) before it is given up with a warning."""


class MetricsError(ValueError):
    """A metrics setting cannot work (a port in use, a bad URL); the message is one line."""


def pushgateway_url(configured: str | None) -> str | None:
    """The Pushgateway to push to: the option or config file's, else ``IOTSWARM_PUSHGATEWAY``."""
    url = (configured or os.environ.get(PUSHGATEWAY_ENV) or "").strip()
    return url or None


def check_pushgateway(url: str, name: str = "pushgateway") -> None:
    """Raise ``MetricsError`` unless ``url`` is ``http(s)://host[:port]`` or ``host:port``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        parts.port  # noqa: B018 (parses the port; a bad one raises)
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MetricsError(
            f"{name} {url!r} is not a Pushgateway address: write http://host:9091 or host:9091"
        )


def push(
    url: str,
    job: str,
    registry: CollectorRegistry,
    grouping: Mapping[str, Any],
    warn: Callable[[str], None],
    *,
    add: bool = False,
) -> bool:
    """Push ``registry`` to the group (job + ``grouping``); False (after one warning) if not."""
    send = pushadd_to_gateway if add else push_to_gateway
    try:
        send(url, job=job, registry=registry, grouping_key=dict(grouping), timeout=PUSH_TIMEOUT)
    except Exception as exc:  # urllib's errors, timeouts, refused connections: all only reported
        warn(f"metrics: could not push to the Pushgateway {url}: {_reason(exc)}; carrying on")
        return False
    return True


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "reason", "") or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def serve(registry: CollectorRegistry, port: int, what: str) -> Callable[[], None]:
    """Serve ``registry`` on ``http://<any address>:port/metrics``; returns the stop function.

    Raises ``MetricsError`` naming ``what`` (e.g. ``shard 1``) when the port cannot be bound.
    """
    try:
        server, thread = start_http_server(port, registry=registry)
    except OSError as exc:
        raise MetricsError(
            f"{what}: cannot serve metrics on port {port}: {exc.strerror or exc}; choose a "
            "free range with --metrics-port (one port per shard)"
        ) from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


class Pusher:
    """Pushes a registry every ``interval`` seconds on a thread of its own, once more at the end."""

    def __init__(
        self,
        url: str,
        job: str,
        registry: CollectorRegistry,
        grouping: Mapping[str, Any],
        interval: float,
        warn: Callable[[str], None],
    ) -> None:
        self.url, self.job, self.registry, self.grouping = url, job, registry, dict(grouping)
        self.interval = interval
        self.warn = warn
        self._warned: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-push", daemon=True)

    def start(self) -> Pusher:
        self._thread.start()
        return self

    def _warn_once(self, line: str) -> None:
        if line not in self._warned:
            self._warned.add(line)
            self.warn(line)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            push(self.url, self.job, self.registry, self.grouping, self._warn_once)

    def close(self) -> bool:
        """Stop the periodic pushes and push the final figures (warned about if it fails)."""
        self._stop.set()
        self._thread.join(timeout=PUSH_TIMEOUT + 1)
        return push(self.url, self.job, self.registry, self.grouping, self.warn)
