"""Reaching the real services the tests use, and starting the ones the machine does not run.

Under ``CI=true`` a service that cannot be reached fails the test; elsewhere it skips with a
reason, so a laptop without PostgreSQL can still run the rest.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(message: str) -> None:
    """Fail under CI, skip elsewhere: a missing service must never pass silently in CI."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: services are required)", pytrace=False)
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_tcp(name: str, host: str, port: int) -> None:
    if not port_open(host, port):
        unavailable(f"{name} is not reachable on {host}:{port}; run `make services`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll a readiness check (a server starting up); this is not used to order test steps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s")


@contextmanager
def moto_server() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto's server mode) on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            return proc.poll() is not None  # stop waiting if it died; checked below

    try:
        wait_until(ready, 60, "moto server")
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with code {proc.returncode}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a server holding many objects can be slow to stop
            proc.kill()
            proc.wait(timeout=10)


def terminate_other_backends(pg_url: str) -> int:
    """Kill every connection to the test database except this one, like a server restart."""
    database = sa.engine.make_url(pg_url).database
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": database},
        ).scalar_one()
    admin.dispose()
    return killed
