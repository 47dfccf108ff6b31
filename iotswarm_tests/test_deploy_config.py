"""The Kubernetes deployment files (deploy/), checked by loading them: no cluster or Docker here.

Each check is against Dagster's own config schemas or the code that reads the settings, so a
renamed key, a missing environment variable or a module/port mismatch fails here, not on deploy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.config import pg_config
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
)
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
EXPORT_JOBS = ("cosmos_live_export_job", "cosmos_history_export_job", "cosmos_reconcile_job")

# Top-level keys of the dagster chart's values (helm/dagster/schema/.../dagster/values.py).
CHART_KEYS = {
    "dagsterWebserver", "dagster-user-deployments", "postgresql",
    "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
    "flower", "ingress", "imagePullSecrets",
    "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox",
    "migrate", "telemetry", "serviceAccount", "global", "retention", "concurrency",
    "additionalInstanceConfig",
}  # fmt: skip


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def values() -> dict:
    return load_yaml(DEPLOY / "helm" / "values.yaml")


@pytest.fixture(scope="module")
def code_location(values) -> dict:
    [deployment] = values["dagster-user-deployments"]["deployments"]
    return deployment


def deployment_env(code_location: dict) -> dict[str, str]:
    """The code location's environment: its env list, and every key of its envSecrets."""
    env = {item["name"]: item["value"] for item in code_location["env"]}
    secrets = {
        doc["metadata"]["name"]: doc["stringData"]
        for doc in yaml.safe_load_all((DEPLOY / "helm" / "prerequisites.yaml").read_text())
        if doc["kind"] == "Secret"
    }
    for ref in code_location["envSecrets"]:
        assert ref["name"] in secrets, f"envSecrets {ref['name']} is not in prerequisites.yaml"
        env.update({key: f"placeholder-{key.lower()}" for key in secrets[ref["name"]]})
    return env


def valid(config_type, value: Any, what: str) -> Any:
    result = process_config(config_type, value)
    assert result.success, f"{what}: " + "; ".join(e.message for e in result.errors)
    return result.value


def test_values_use_only_chart_keys_and_the_k8s_executor(values, code_location):
    assert set(values) <= CHART_KEYS
    env = {item["name"]: item["value"] for item in code_location["env"]}
    assert (env["IOTSWARM_DEPLOYMENT"], env["IOTSWARM_EXECUTOR"]) == ("prod", "k8s")
    assert code_location["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).replace("K8s", "k8s").lower()


def test_run_launcher_section_is_a_valid_k8s_run_launcher_config(values):
    """The chart's camelCase keys, as its template writes them into the instance's dagster.yaml.

    Every key set here goes through Dagster's own (strict) schema, so a misspelt one fails.
    """
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = {
        snake(key): value
        for key, value in launcher.items()
        if value is not None  # the chart fills an empty namespace with the release's
    }
    config["run_k8s_config"] = {snake(k): v for k, v in launcher["runK8sConfig"].items()}
    config["service_account_name"] = "dagster"  # filled in by the chart
    config["instance_config_map"] = "dagster-instance"  # filled in by the chart
    valid(K8sRunLauncher.config_type(), config, "runLauncher.config.k8sRunLauncher")
    assert launcher["imagePullPolicy"] in ("Always", "IfNotPresent", "Never")


def test_daemon_queue_has_the_root_instance_limits(values):
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    config = {
        "max_concurrent_runs": queue["maxConcurrentRuns"],
        "tag_concurrency_limits": queue["tagConcurrencyLimits"],
    }
    valid(QueuedRunCoordinator.config_type(), config, "dagsterDaemon.runCoordinator")
    assert config == load_yaml(ROOT / "dagster.yaml")["concurrency"]["runs"]


def test_instance_sections_render_to_a_valid_dagster_yaml(values):
    """What the chart writes for our monitoring, retries, sensors, retention and PostgreSQL."""
    daemon = values["dagsterDaemon"]
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    pg = values["postgresql"]
    instance = {
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
        },
        "run_retries": {
            "enabled": retries["enabled"],
            "max_retries": retries["maxRetries"],
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
        },
        "sensors": {
            "use_threads": daemon["sensors"]["useThreads"],
            "num_workers": daemon["sensors"]["numWorkers"],
        },
        "retention": {
            kind: {"purge_after_days": values["retention"][kind]["purgeAfterDays"]}
            for kind in ("sensor", "schedule")
        },
        "telemetry": values["telemetry"],
    }
    valid(dg.Shape(dagster_instance_config_schema()), instance, "dagsterDaemon")
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": "from-the-secret",
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg["postgresqlParams"],
        "scheme": pg["postgresqlScheme"],
    }
    valid(pg_config(), {"postgres_db": postgres_db}, "postgresql")
    prod = load_yaml(DEPLOY / "dagster.prod.yaml")
    assert pg["postgresqlScheme"] == prod["storage"]["postgres"]["postgres_db"]["scheme"]


def chart_container_context(code_location: dict) -> dict:
    """The code location's container context, as the chart's template writes it for launched
    runs (dagster-user-deployments, ``dagsterUserDeployments.k8sContainerContext``)."""
    return {
        "k8s": {
            "image_pull_policy": code_location["image"]["pullPolicy"],
            "env_config_maps": [f"dagster-{code_location['name']}-user-env"],
            "env_secrets": [ref["name"] for ref in code_location["envSecrets"]],
            "volume_mounts": code_location["volumeMounts"],
            "volumes": code_location["volumes"],
            "resources": code_location["resources"],
            "namespace": "iotswarm",
            "service_account_name": "dagster-user-deployments",
            "env": code_location["env"],
            "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
        }
    }


def k8s_config(section: dict) -> UserDefinedDagsterK8sConfig:
    return UserDefinedDagsterK8sConfig.from_dict({snake(k): v for k, v in section.items()})


def pod_of(context: K8sContainerContext, component: str) -> Any:
    """The Kubernetes Job Dagster would create, built and checked by dagster-k8s itself."""
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(
            job_image="registry.example.org/fdri/iotswarm-pipelines:0.1.0",
            dagster_home="/opt/dagster/dagster_home",
            instance_config_map="dagster-instance",
        ),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-{component}",
        pod_name=f"dagster-{component}",
        component=component,
        user_defined_k8s_config=context.run_k8s_config,
    )
    return job.spec.template.spec


def test_run_and_shard_step_pods_get_the_volume_secrets_user_and_resources(values, code_location):
    """Run and step pods as K8sRunLauncher and k8s_job_executor assemble them."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_context = K8sContainerContext(
        image_pull_policy=launcher["imagePullPolicy"],
        run_k8s_config=k8s_config(launcher["runK8sConfig"]),
    ).merge(K8sContainerContext.create_from_config(chart_container_context(code_location)))
    executor = load_yaml(DEPLOY / "k8s-run-config.yaml")["execution"]["config"]
    step_context = run_context.merge(
        K8sContainerContext(run_k8s_config=k8s_config(executor["step_k8s_config"]))
    )
    shard_context = step_context.merge(
        K8sContainerContext(run_k8s_config=k8s_config(executor["per_step_k8s_config"]["run_shard"]))
    )
    pods = {
        "run": pod_of(run_context, "run_worker"),
        "step": pod_of(step_context, "step_worker"),
        "shard": pod_of(shard_context, "step_worker"),
    }
    for name, pod in pods.items():
        [container] = pod.containers
        mounts = {m.mount_path: (m.name, m.sub_path) for m in container.volume_mounts}
        assert mounts["/var/lib/iotswarm"] == ("iotswarm-data", None), name
        assert mounts["/opt/dagster/dagster_home/storage"] == ("iotswarm-data", "dagster-storage")
        assert mounts["/etc/iotswarm/mqtt"][0] == "iotswarm-mqtt-tls", name
        claims = {v.name: v.persistent_volume_claim for v in pod.volumes}
        assert claims["iotswarm-data"].claim_name == "iotswarm-data", name
        assert "iotswarm-credentials" in {
            e.secret_ref.name for e in container.env_from if e.secret_ref
        }
        env = {e.name: e.value for e in container.env}
        assert env["IOTSWARM_EXECUTOR"] == "k8s" and env["IOTSWARM_DEPLOYMENT"] == "prod", name
        assert (pod.security_context.run_as_user, pod.security_context.fs_group) == (10001, 10001)
    requests = {name: pod.containers[0].resources.requests for name, pod in pods.items()}
    assert requests == {
        "run": {"cpu": "250m", "memory": "512Mi"},
        "step": {"cpu": "250m", "memory": "512Mi"},
        "shard": {"cpu": "1", "memory": "1Gi"},
    }


def resources_env_names() -> set[str]:
    """Every environment variable resources.py reads: each quoted UPPER_CASE name in it."""
    source = (ROOT / "iotswarm_pipelines" / "resources.py").read_text()
    return set(re.findall(r"\"([A-Z][A-Z0-9]*_[A-Z0-9_]+)\"", source)) - {"IOTSWARM_DEPLOYMENT"}


# resources.py keeps the watermark state in a folder or in the bucket: exactly one is set.
STATE_LOCATIONS = {"LIVECOSMOS_STATE_DIR", "LIVECOSMOS_STATE_URI"}
# Unset on Kubernetes, where the step pods share the iotswarm-data volume: step outputs go
# through S3 only for hosts that share no disk (docs/scaling-out.md).
OPTIONAL = {"IOTSWARM_IO_URI"}
# Per host and optional: a broker list and the local addresses shards connect from.
OPTIONAL |= {"IOTSWARM_MQTT_BROKERS", "IOTSWARM_MQTT_SOURCE_ADDRESSES"}
# Files holding a secret instead of the variable itself (SECURITY.md): either way is complete.
OPTIONAL |= {"COSMOS_DB_URL_FILE", "IOTSWARM_MQTT_PASSWORD_FILE"}


def test_every_variable_the_prod_resources_read_is_provided(code_location):
    names = resources_env_names()
    assert {"COSMOS_DB_URL", "IOTSWARM_MQTT_HOST"} | STATE_LOCATIONS <= names  # sanity
    provided = set(deployment_env(code_location))
    assert len(provided & STATE_LOCATIONS) == 1, f"set exactly one of {sorted(STATE_LOCATIONS)}"
    missing = names - STATE_LOCATIONS - OPTIONAL - provided
    assert not missing, f"set these in deploy/helm/values.yaml env or envSecrets: {missing}"


def test_dockerfile_serves_the_module_and_port_of_the_values(code_location):
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    [cmd] = re.findall(r"^CMD (\[.*\])$", dockerfile, flags=re.MULTILINE)
    command = json.loads(cmd)
    assert command[:3] == ["dagster", "api", "grpc"]
    args = code_location["dagsterApiGrpcArgs"]
    module = args[args.index("-m") + 1]
    assert command[command.index("-m") + 1] == module
    assert int(command[command.index("-p") + 1]) == code_location["port"]
    assert f"EXPOSE {code_location['port']}" in dockerfile
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert module == pyproject["tool"]["dagster"]["module_name"]
    assert re.search(r"^USER \d+$", dockerfile, flags=re.MULTILINE), (
        "the image must not run as root"
    )
    uid = int(re.findall(r"^USER (\d+)$", dockerfile, flags=re.MULTILINE)[0])
    assert code_location["podSecurityContext"]["runAsUser"] == uid


def test_image_pins_cover_every_dependency_at_the_project_pins():
    """A dependency added to pyproject.toml without re-running scripts/lock_deploy_deps.py fails."""
    pins = dict(
        line.split("==")
        for line in (DEPLOY / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for requirement in map(Requirement, pyproject["project"]["dependencies"]):
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} is not pinned: run scripts/lock_deploy_deps.py"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]}: {requirement}"


# Run in a fresh interpreter: the executor is chosen when the definitions are imported, and the
# definitions other tests imported (local, multiprocess) must stay as they are.
LOAD_IN_PROD = """
import json, sys, yaml
import dagster as dg
from iotswarm_pipelines.definitions import defs

run_config = yaml.safe_load(open(sys.argv[1]))
# The history re-export has no defaults for its table and days: a launch picks them.
picked = {"table": "LEVEL1_SOILMET_30MIN", "first_day": "2024-06-01", "last_day": "2024-06-02"}
required = {"cosmos_history_export_job": {"ops": {"cosmos__history_export": {"config": picked}}}}
report = {}
for name in sys.argv[2:]:
    job = defs.resolve_job_def(name)
    dg.validate_run_config(job, {**run_config, **required.get(name, {})})
    report[name] = job.executor_def.name
print(json.dumps(report))
"""


def test_prod_code_location_runs_every_job_on_the_k8s_executor(code_location, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTSWARM_", "LIVECOSMOS_"))}
    env.update(deployment_env(code_location))
    env["IOTSWARM_DATA_DIR"] = str(tmp_path)
    jobs = ("swarm_job", *EXPORT_JOBS)
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_IN_PROD, str(DEPLOY / "k8s-run-config.yaml"), *jobs],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    executors = json.loads(completed.stdout.strip().splitlines()[-1])
    assert executors == dict.fromkeys(jobs, "k8s")
