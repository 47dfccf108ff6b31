"""The engine's side of the command-and-control API: each device's commands, answered on its
own connection from the shard's one event loop.

Decisions:
- Per-device connections only: the API is per device (its subscription, its last will, its
  reboot drops its own connection), which one shared client cannot carry. With
  ``connections=shared`` the shard runs without control (the runner says so in one line).
- On every CONNACK a device subscribes to ``<group>/cc/<device>/#`` and says online; its last
  will says offline. A restart (reboot, program or OS load, MQTT config) says offline, waits
  for the acknowledgement of everything it published (so paho never re-sends an old answer
  after the reconnect), closes the connection cleanly, and opens it again after
  ``reboot_seconds``; the publishing engine sees an ordinary held connection meanwhile.
- Blocking work, an HTTP(S) GET (bounded timeouts, at most `MAX_DOWNLOAD_BYTES`) or a
  historic read and its payloads, runs on a small pool; results come back to the loop through
  a queue and a wake-up, so no device's thread exists and the loop never blocks on I/O.
- Faults are drawn per device from the shard's seeded random source: a device that ignores
  commands counts them as received and never answers; a late one delays every answer.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import paho.mqtt.client as paho

from iotswarm_pipelines.payloads import PayloadFormat
from iotswarm_pipelines.swarm.control.logger import LoggerState
from iotswarm_pipelines.swarm.control.protocol import (
    COMMANDS,
    Action,
    Download,
    Fetch,
    Logger,
    Publish,
    ReadHistory,
    Restart,
)
from iotswarm_pipelines.swarm.control.topics import Topics
from iotswarm_pipelines.swarm.mqtt.accounting import Accounts
from iotswarm_pipelines.swarm.mqtt.connections import Connection, Connections
from iotswarm_pipelines.swarm.mqtt.loop import EventLoop
from iotswarm_pipelines.swarm.mqtt.types import CommandCounts, ControlSettings

WORKERS = 4  # downloads and historic reads at once, per shard
MAX_DOWNLOAD_BYTES = 64 << 20  # an OS image is a few MB; read no more than this
UNKNOWN = "unknown"  # the report's kind for commands outside the API
Rows = Sequence[Mapping[str, Any]]
HistoryReader = Callable[[str, datetime, datetime], Rows]
"""(site, start, end) -> the site's rows with start <= DATE_TIME <= end, oldest first."""


def download(url: str, timeout: float) -> Download:
    """GET ``url`` (http or https only) with ``timeout`` per step and in all; any HTTP answer,
    even a 404, has a status; no answer at all (bad URL, refused, timed out) has None."""
    if not url.lower().startswith(("http://", "https://")):
        return Download(None)
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            chunks: list[bytes] = []
            size = 0
            while size < MAX_DOWNLOAD_BYTES and time.monotonic() < deadline:
                chunk = response.read(1 << 16)
                if not chunk:
                    return Download(response.status, b"".join(chunks))
                chunks.append(chunk)
                size += len(chunk)
            return Download(None)  # too large or too slow: the logger gives up
    except urllib.error.HTTPError as err:
        return Download(err.code)
    except (OSError, ValueError):
        return Download(None)


class _Job:
    """One command being answered: its kind, when it arrived, and whether it failed."""

    __slots__ = ("error", "kind", "received_at")

    def __init__(self, kind: str, received_at: float) -> None:
        self.kind = kind
        self.received_at = received_at
        self.error = False


class Link:
    """A device's control state as the engine holds it."""

    __slots__ = ("after", "conn", "deaf", "late", "logger", "no_downloads", "restarting", "unacked")

    def __init__(self, conn: Connection, logger: Logger) -> None:
        self.conn = conn
        self.logger = logger
        self.deaf = False  # fault: ignores every command
        self.late = False  # fault: answers late
        self.no_downloads = False  # fault: every download fails
        self.restarting = False
        self.after: tuple[_Job, Restart] | None = None  # what to do once back online
        self.unacked: set[int] = set()  # QoS 1 control publishes awaiting PUBACK


class Commands:
    """Routes each device's commands to its `Logger` and performs the actions it returns."""

    def __init__(
        self,
        settings: ControlSettings,
        loop: EventLoop,
        accounts: Accounts,
        rng: random.Random,
        qos: int,
        read_history: HistoryReader,
        payload_format: PayloadFormat,
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.accounts = accounts
        self.random = rng
        self.qos = qos
        self.read_history = read_history
        self.payload_format = payload_format
        self.connections: Connections | None = None  # set by the shard once it has them
        self.links: list[Link] = []
        self.closing = False
        self._pool: ThreadPoolExecutor | None = None
        self._done: deque[Callable[[], None]] = deque()
        self._delegate_publish: Callable[..., None] | None = None
        # log-normal of answer delays: median m, p99 = m * exp(2.326 sigma)
        ratio = max(settings.late_p99_s / max(settings.late_median_s, 1e-9), 1.0)
        self._late_sigma = math.log(ratio) / 2.326

    def add(self, conn: Connection, stream: Any, prog_name: str) -> None:
        """Make ``stream``'s device answer commands on ``conn`` (before it connects)."""
        client = conn.client
        assert client is not None
        state = LoggerState(
            client_id=stream.device_id,
            site_id=getattr(stream, "site_id", stream.device_id),
            program=prog_name,
            tables=self.settings.tables,
            current_row=lambda: getattr(stream, "last_row", None),
        )
        topics = Topics(self.settings.group_id, stream.device_id)
        link = Link(conn, Logger(state, topics, self.payload_format))
        share = self.settings
        link.deaf = self.random.random() * 100 < share.ignore_share
        link.late = self.random.random() * 100 < share.late_share
        link.no_downloads = self.random.random() * 100 < share.download_fail_share
        conn.control = link
        client.will_set(topics.state, link.logger.will, qos=1)
        client.on_message = self._on_message
        if self.qos:
            self._delegate_publish = client.on_publish
            client.on_publish = self._on_publish
        self.links.append(link)

    # connection events -------------------------------------------------------------------

    def connected(self, conn: Connection) -> None:
        link: Link | None = conn.control
        if link is None:
            return
        topics = link.logger.topics
        client = conn.client
        assert client is not None
        client.subscribe(topics.commands, qos=1)
        self._publish(link, Publish(topics.state, link.logger.online))
        link.restarting = False
        if link.after is not None:
            job, restart = link.after
            link.after = None
            self._perform(link, job, list(restart.then))
            if restart.answer:
                self._answered(job)

    def _on_message(self, _client, conn: Connection, message: paho.MQTTMessage) -> None:
        link: Link | None = conn.control
        if link is None or link.restarting or self.closing:
            return
        command = link.logger.topics.command_of(message.topic)
        if command is None:
            return
        kind = command if command in COMMANDS else UNKNOWN
        job = _Job(kind, time.monotonic())
        self._counts(kind).received += 1
        if link.deaf:
            self._fault("ignored")
            return
        actions = link.logger.handle(command, bytes(message.payload))
        if not actions:
            return
        if link.late:
            self._fault("late")
            delay = self.settings.late_median_s * math.exp(self.random.gauss(0, self._late_sigma))
            self.loop.call_at(time.monotonic() + delay, lambda: self._perform(link, job, actions))
        else:
            self._perform(link, job, actions)

    def _on_publish(self, client, conn: Connection, mid, reason_code, properties) -> None:
        link: Link | None = conn.control
        if link is not None and mid in link.unacked:
            link.unacked.discard(mid)
            if link.restarting and not link.unacked:
                self._go_down(link)
            return
        if self._delegate_publish is not None:
            self._delegate_publish(client, conn, mid, reason_code, properties)

    # actions -----------------------------------------------------------------------------

    def _counts(self, kind: str) -> CommandCounts:
        counts = self.accounts.result.control.get(kind)
        if counts is None:
            counts = self.accounts.result.control[kind] = CommandCounts()
        return counts

    def _fault(self, name: str) -> None:
        faults = self.accounts.result.control_faults
        faults[name] = faults.get(name, 0) + 1

    def _answered(self, job: _Job) -> None:
        counts = self._counts(job.kind)
        counts.answered += 1
        counts.errors += job.error
        counts.latencies_ms.append((time.monotonic() - job.received_at) * 1000.0)

    def _publish(self, link: Link, publish: Publish) -> None:
        client = link.conn.client
        assert client is not None
        if publish.topic == link.logger.topics.state:
            state = b"offline" if b'"state":"offline"' in publish.payload else b"online"
            transitions = self.accounts.result.state_transitions
            transitions[state.decode()] = transitions.get(state.decode(), 0) + 1
        info = client.publish(publish.topic, publish.payload, self.qos)
        if self.qos and info.rc == paho.MQTT_ERR_SUCCESS:
            link.unacked.add(info.mid)

    def _perform(self, link: Link, job: _Job, actions: list[Action]) -> None:
        if self.closing or not link.conn.connected:
            return
        for action in actions:
            if isinstance(action, Publish):
                self._publish(link, action)
                job.error |= action.error
                if action.answer:
                    self._answered(job)
            elif isinstance(action, Restart):
                self._restart(link, job, action)
                return
            elif isinstance(action, Fetch):
                self._fetch(link, job, action)
            elif isinstance(action, ReadHistory):
                self._read(link, job, action)

    def _restart(self, link: Link, job: _Job, restart: Restart) -> None:
        if restart.offline is not None:
            self._publish(link, Publish(link.logger.topics.state, restart.offline))
        link.restarting = True
        link.after = (job, restart)
        if not link.unacked:
            self._go_down(link)

    def _go_down(self, link: Link) -> None:
        connections = self.connections
        assert connections is not None
        connections.hold(link.conn)
        self.loop.call_at(
            time.monotonic() + self.settings.reboot_seconds,
            lambda: connections.release(link.conn),
        )

    def _submit(self, work: Callable[[], Any], then: Callable[[Any], None]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="swarm-control")

        def run() -> None:
            try:
                value = work()
            except Exception as exc:  # handed back to the loop, which reports it
                value = exc
            self._done.append(lambda: then(value))
            self.loop.wake()

        self._pool.submit(run)

    def _fetch(self, link: Link, job: _Job, fetch: Fetch) -> None:
        def then(outcome: Any) -> None:
            if isinstance(outcome, Exception):
                outcome = Download(None)
            self._perform(link, job, link.logger.fetched(fetch, outcome))

        if link.no_downloads:
            self._fault("download_failed")
            self._done.append(lambda: then(Download(None)))
            self.loop.wake()
            return
        timeout = self.settings.download_timeout_s
        self._submit(lambda: download(fetch.url, timeout), then)

    def _read(self, link: Link, job: _Job, read: ReadHistory) -> None:
        logger = link.logger
        site = logger.state.site_id

        def work() -> list[Action]:
            rows = self.read_history(site, read.start, read.end)
            return logger.history(read.table, rows)

        def then(actions: Any) -> None:
            if isinstance(actions, Exception):
                self.accounts.error(f"historicData for {site}: {actions}")
                return
            self._perform(link, job, actions)

        self._submit(work, then)

    def service(self) -> None:
        """Run the follow-ups of finished downloads and reads (on the loop's thread)."""
        while self._done:
            self._done.popleft()()

    def close(self) -> None:
        """Stop answering; connected devices say offline before the engine disconnects them."""
        self.closing = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for link in self.links:
            if link.conn.connected:
                with contextlib.suppress(Exception):
                    self._publish(link, Publish(link.logger.topics.state, link.logger.will))
