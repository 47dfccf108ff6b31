"""Private Prometheus, Pushgateway and Alertmanager servers for the metrics and alert tests.

Debian's programs (``scripts/services.sh`` installs them), each started by the test on a free
loopback port with a generated config and its own data folder, never the machine's services.
A server is ready once its ``/-/ready`` endpoint answers 200 (polled, bounded); it is stopped at
the end of the test. A missing program skips the test, or fails it under ``CI=true``.

Use the fixtures::

    def test_x(pushgateway, start_prometheus):
        prometheus = start_prometheus({"shards": ["127.0.0.1:9464"]}, pushgateway=pushgateway)
        prometheus.wait_for("sum(iotswarm_swarm_messages_sent_total)", lambda v: v == 100)

or the context managers (``prometheus_server``, ``pushgateway_server``,
``alertmanager_server``) where a fixture's lifetime does not fit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iotswarm_tests.services import free_port, unavailable

READY_SECONDS = 60.0  # a loaded 2-core machine can take a while to open a TSDB
STOP_SECONDS = 10.0
SCRAPE_INTERVAL = "1s"


def binary(name: str) -> str:
    """The program's path; skips (fails under CI) when the Debian package is not installed."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed: run `make services` (Debian package {name})")
    assert path is not None
    return path


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@dataclass
class Server:
    """One running program: its base URL, process and log file."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path

    @property
    def address(self) -> str:
        """``127.0.0.1:port``, as a scrape target or an alertmanager target is written."""
        return urllib.parse.urlsplit(self.url).netloc

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` (JSON answer decoded); raises on an HTTP error with the server's text."""
        query = f"?{urllib.parse.urlencode(params, doseq=True)}" if params else ""
        status, body = _get(f"{self.url}{path}{query}")
        if status != 200:
            raise AssertionError(f"{self.name} {path}: HTTP {status}: {body[:500]!r}")
        return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def _running(name: str, argv: Sequence[str], port: int, workdir: Path) -> Iterator[Server]:
    """Start ``argv``, wait (bounded) for ``/-/ready``, stop it on the way out."""
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(list(argv), stdout=out, stderr=out, cwd=workdir)
    server = Server(name, f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:  # a readiness poll, bounded: not a way of ordering test steps
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}:\n{server.log_tail()}"
                )
            try:
                if _get(f"{server.url}/-/ready", timeout=1.0)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name} not ready after {READY_SECONDS:g}s:\n{server.log_tail()}"
                )
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)


# Pushgateway ---------------------------------------------------------------------------------


class Pushgateway(Server):
    def groups(self) -> list[dict[str, Any]]:
        """The pushed groups (``/api/v1/metrics``): labels and metrics of each."""
        return self.get("/api/v1/metrics")["data"]

    def text(self) -> str:
        """Everything it exposes, in the text format Prometheus scrapes."""
        return self.get("/metrics")


@contextmanager
def pushgateway_server(workdir: Path) -> Iterator[Pushgateway]:
    port = free_port()
    argv = [binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}"]
    with _running("pushgateway", argv, port, workdir) as server:
        yield Pushgateway(**vars(server))


# Alertmanager --------------------------------------------------------------------------------

NULL_ALERTMANAGER_CONFIG = """\
route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


class Alertmanager(Server):
    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """Alerts it holds now (API v2), optionally only those whose labels match ``filters``."""
        alerts = self.get("/api/v2/alerts")
        return [a for a in alerts if all(a["labels"].get(k) == v for k, v in filters.items())]


@contextmanager
def alertmanager_server(
    workdir: Path, config: str = NULL_ALERTMANAGER_CONFIG
) -> Iterator[Alertmanager]:
    """``config``: the alertmanager.yml text (receivers, routes)."""
    port = free_port()
    folder = workdir / f"alertmanager-{port}"
    folder.mkdir(parents=True)
    (folder / "alertmanager.yml").write_text(config)
    argv = [
        binary("prometheus-alertmanager"),
        f"--config.file={folder / 'alertmanager.yml'}",
        f"--storage.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip port: a single private instance
    ]
    with _running("alertmanager", argv, port, folder) as server:
        yield Alertmanager(**vars(server))


# Prometheus ----------------------------------------------------------------------------------


class Prometheus(Server):
    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The one value of an expression (None while it has no sample)."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr} has {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def values(self, expr: str, by: str) -> dict[str, float]:
        """The expression's values keyed by one label's value."""
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in self.query(expr)}

    def wait_for(
        self,
        expr: str,
        done: Callable[[float | None], bool],
        timeout: float = 60.0,
    ) -> float | None:
        """Poll ``expr`` (bounded) until ``done(value)``; the failure shows the last value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(expr)
            if done(value):
                return value
            time.sleep(0.2)
        raise AssertionError(f"{expr} = {value} after {timeout:g}s (targets: {self.health()})")

    def health(self) -> dict[str, str]:
        """Each active target's scrape health and last error, by job and address."""
        targets = self.get("/api/v1/targets")["data"]["activeTargets"]
        return {
            f"{t['labels'].get('job')}/{t['labels'].get('instance')}": (
                t["health"] + (f" ({t['lastError']})" if t.get("lastError") else "")
            )
            for t in targets
        }

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts the rules produce now (pending and firing)."""
        return self.get("/api/v1/alerts")["data"]["alerts"]


def prometheus_config(
    targets: Mapping[str, Sequence[str]],
    *,
    pushgateway: Server | None = None,
    alertmanager: Server | None = None,
    rule_files: Sequence[str | Path] = (),
    scrape_interval: str = SCRAPE_INTERVAL,
) -> dict[str, Any]:
    """The prometheus.yml of a test: one scrape job per ``targets`` entry (job name -> addresses),
    the Pushgateway (``honor_labels``, so pushed job labels stay) and where alerts go."""
    jobs: list[dict[str, Any]] = [
        {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
        for job, addresses in targets.items()
    ]
    if pushgateway is not None:
        jobs.append(
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [pushgateway.address]}],
            }
        )
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": jobs,
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
    }
    if alertmanager is not None:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [alertmanager.address]}]}]
        }
    return config


@contextmanager
def prometheus_server(workdir: Path, config: Mapping[str, Any]) -> Iterator[Prometheus]:
    """Prometheus on ``config`` (``prometheus_config``; JSON is YAML, so no YAML writer)."""
    port = free_port()
    folder = workdir / f"prometheus-{port}"
    folder.mkdir(parents=True)
    (folder / "prometheus.yml").write_text(json.dumps(config, indent=2))
    argv = [
        binary("prometheus"),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _running("prometheus", argv, port, folder) as server:
        yield Prometheus(**vars(server))


# pytest fixtures -----------------------------------------------------------------------------


@pytest.fixture
def pushgateway(tmp_path) -> Iterator[Pushgateway]:
    with pushgateway_server(tmp_path) as server:
        yield server


@pytest.fixture
def start_alertmanager(tmp_path) -> Iterator[Callable[..., Alertmanager]]:
    """``start_alertmanager(config=...)``: an Alertmanager, stopped when the test ends."""
    with ExitStack() as stack:
        yield lambda config=NULL_ALERTMANAGER_CONFIG: stack.enter_context(
            alertmanager_server(tmp_path, config)
        )


@pytest.fixture
def start_prometheus(tmp_path) -> Iterator[Callable[..., Prometheus]]:
    """``start_prometheus(targets, pushgateway=, alertmanager=, rule_files=, scrape_interval=)``:
    a Prometheus scraping what the test names, stopped when the test ends."""
    with ExitStack() as stack:

        def start(targets: Mapping[str, Sequence[str]] | None = None, **kwargs: Any) -> Prometheus:
            config = prometheus_config(targets or {}, **kwargs)
            return stack.enter_context(prometheus_server(tmp_path, config))

        yield start
