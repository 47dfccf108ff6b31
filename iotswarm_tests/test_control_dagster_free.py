"""The control API and the engine's side of it load without Dagster (a claim made a fact)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "iotswarm_pipelines.swarm.control.protocol",
        "iotswarm_pipelines.swarm.control.historic",
        "iotswarm_pipelines.swarm.mqtt.commands",
    ],
)
def test_loads_without_dagster(module):
    code = f"import sys, {module}; sys.exit('dagster' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0, module
