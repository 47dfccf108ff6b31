"""Running the swarm as its users do: ``iot-swarm`` as a real process, and the swarm job's
run config.

Every process ``iot_swarm`` starts carries a marker in its environment (children inherit
it), so a test sees that none outlives the run, and the ``mark`` fixture kills any left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REFERENCE_CSV = Path(__file__).parent / "data" / "level1_soilmet_30min_alic1_sample.csv"
MARK = "IOTSWARM_TEST_MARK"


def iot_swarm(*args: str, mark: str = "", env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "iotswarm_pipelines.swarm.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {}), MARK: mark},
    )


def marked_processes(mark: str) -> list[int]:
    """Every live process whose environment carries ``mark`` (children inherit it)."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":  # a zombie publishes nothing and holds no socket
                    found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


@pytest.fixture
def mark() -> Iterator[str]:
    """A marker for the test's swarm processes; any left at the end are killed, so a failing
    test cannot leave publishers behind."""
    value = uuid.uuid4().hex
    yield value
    for pid in marked_processes(value):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def swarm_config(name: str, sessions_dir: Path, **extra) -> dict:
    """Devices cloned from the reference CSV's site, looping over its rows."""
    return {
        "source": str(REFERENCE_CSV),
        "mode": "loop",
        "swarm_name": name,
        "mqtt_prefix": name,
        "sessions_dir": str(sessions_dir),
        "connect_rate": 0.0,
        "max_publish_rate": 0.0,
        **extra,
    }


def swarm_run_config(plan: dict, mqtt: dict) -> dict:
    return {
        "ops": {"plan_swarm": {"config": plan}},
        "resources": {
            "mqtt": {"config": mqtt},
            "cosmos": {"config": {"url": "sqlite:////nonexistent/unused.sqlite"}},
        },
    }
