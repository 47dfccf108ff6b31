"""The modules that claim to work without Dagster do: each imports with Dagster refused.

One fresh interpreter refuses every ``dagster`` import (a meta path finder raising ImportError
that names the chain of modules being imported), then imports each module below in turn, so a
module that reaches Dagster, however indirectly, fails by name with the chain that led there.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

DAGSTER_FREE = (
    # rules and value types
    "iotswarm_pipelines.payloads",
    "iotswarm_pipelines.payload_options",
    "iotswarm_pipelines.file_options",
    "iotswarm_pipelines.cosmos.catalogue",
    "iotswarm_pipelines.cosmos.errors",
    "iotswarm_pipelines.cosmos.queries",
    "iotswarm_pipelines.cosmos.schema",
    "iotswarm_pipelines.export.bad_rows",
    "iotswarm_pipelines.export.health",
    "iotswarm_pipelines.export.keys",
    "iotswarm_pipelines.export.reconciliation",
    "iotswarm_pipelines.export.scope",
    "iotswarm_pipelines.export.sites",
    "iotswarm_pipelines.export.state",
    "iotswarm_pipelines.export.store_errors",
    "iotswarm_pipelines.export.summary_text",
    "iotswarm_pipelines.export.watermarks",
    "iotswarm_pipelines.swarm.devices",
    "iotswarm_pipelines.swarm.options",
    "iotswarm_pipelines.swarm.planning",
    "iotswarm_pipelines.swarm.scenario",
    "iotswarm_pipelines.swarm.mqtt.types",
    # adapters: one per outside system
    "iotswarm_pipelines.cosmos.source",
    "iotswarm_pipelines.s3",
    "iotswarm_pipelines.export.object_store",
    "iotswarm_pipelines.export.state_backend",
    "iotswarm_pipelines.export.state_store",
    "iotswarm_pipelines.export.state_s3",
    "iotswarm_pipelines.swarm.session_store",
    # runners under the thin Dagster shells
    "iotswarm_pipelines.export.pipeline",
    "iotswarm_pipelines.export.reconcile",
    "iotswarm_pipelines.swarm.data",
    "iotswarm_pipelines.swarm.sessions",
    "iotswarm_pipelines.swarm.shard_runner",
    "iotswarm_pipelines.swarm.report",
    "iotswarm_pipelines.swarm.iot_core",
    "iotswarm_pipelines.swarm.mqtt.engine",
    "iotswarm_pipelines.swarm.mqtt.settings",
    "iotswarm_pipelines.swarm.mqtt.verifier",
    "iotswarm_pipelines.swarm.control.protocol",
    "iotswarm_pipelines.swarm.control.logger",
    # the sample database and shared helpers
    "iotswarm_pipelines.cosmos.sample.generator",
    "iotswarm_pipelines.cosmos.sample.follow",
    "iotswarm_pipelines.cosmos.sample.cli",
    "iotswarm_pipelines.metrics.exposition",
    "iotswarm_pipelines.metrics.export",
    "iotswarm_pipelines.metrics.swarm",
    "iotswarm_pipelines.atomic",
    "iotswarm_pipelines.clock",
    "iotswarm_pipelines.daemon_pool",
    "iotswarm_pipelines.errors",
    "iotswarm_pipelines.labels",
    "iotswarm_pipelines.notify",
    "iotswarm_pipelines.redact",
    "iotswarm_pipelines.secret_files",
    "iotswarm_pipelines.settings",
)

_PROBE = r"""
import importlib, json, sys


class RefuseDagster:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].split("_")[0] != "dagster":
            return None
        frame, chain = sys._getframe(1), []
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if frame.f_code.co_name == "<module>" and module.startswith("iotswarm_pipelines"):
                chain.append(module)
            frame = frame.f_back
        raise ImportError(" -> ".join([*reversed(chain), name]))


sys.meta_path.insert(0, RefuseDagster())
failures = {}
for module in json.loads(sys.argv[1]):
    try:
        importlib.import_module(module)
    except ImportError as exc:
        failures[module] = str(exc)
print(json.dumps({"failures": failures, "loaded": "dagster" in sys.modules}))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(DAGSTER_FREE)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("module", DAGSTER_FREE)
def test_imports_without_dagster(probe, module):
    assert module not in probe["failures"], f"{module} loads Dagster: {probe['failures'][module]}"


def test_dagster_stays_unloaded(probe):
    assert not probe["loaded"]


def test_the_probe_names_the_chain_to_dagster():
    """The probe itself works: a Dagster shell fails, with the module that imported Dagster."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(["iotswarm_pipelines.cosmos.resource"])],
        capture_output=True,
        text=True,
        check=True,
    )
    chain = json.loads(done.stdout.splitlines()[-1])["failures"][
        "iotswarm_pipelines.cosmos.resource"
    ]
    assert chain.startswith("iotswarm_pipelines.cosmos.resource -> ")
    assert chain.endswith(" -> dagster")
