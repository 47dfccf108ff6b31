"""The same swarm on the multiprocess executor, on 1 Celery worker and on 2 Celery workers.

Run: `.venv/bin/python -m benchmarks.bench_swarm_celery` (about 5 minutes). Needs the machine's
Redis (127.0.0.1:6379) and Mosquitto (127.0.0.1:1883, the local deployment's broker): `make
services`.

Every run is launched like an operator's (`dagster job execute`, `IOTSWARM_EXECUTOR` in the
environment) on a fresh persistent instance; workers are started before and stopped after the
runs of their setting, so their start-up is not counted. Per run it prints:

* swarm msgs/s: messages sent over the swarm's span (first shard start to last shard end), the
  swarm report's own figure; connections: MQTT connections the shards opened;
* run wall: RUN_START to RUN_SUCCESS in the event log (planning, step hand-offs, IO manager);
* launch wall: the whole `dagster job execute` process, code loading included;
* the ratio of run wall to the multiprocess run's median, measured in the same invocation.

A worker's pool processes import Dagster and the code location at their first step and keep them:
the first run on fresh workers is "cold", later runs are "warm". The multiprocess executor starts
(and imports in) a new process for every step of every run, so all its runs are cold.

Each Celery setting has as many worker processes in total as there are shards (1 worker of
`shards` processes, 2 of `shards / 2`), the same budget as the multiprocess executor's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import dagster as dg

from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_tests.celery_workers import celery_workers, execute, run_env

TABLE = "LEVEL1_SOILMET_30MIN"
SITES = ["ALIC1", "BALRD", "CHIMN", "COCLP", "EASTB", "GISBN", "HOLLN", "LODTN", "MORLY", "SHEEP"]


def prepared_env(root: Path, executor: str) -> dict[str, str]:
    env = {**run_env(root), "IOTSWARM_EXECUTOR": executor}
    url = f"sqlite:///{Path(env['IOTSWARM_DATA_DIR']) / 'cosmos.sqlite'}"
    generate(url, start=datetime(2024, 6, 1), end=datetime(2024, 6, 2), sites=SITES, tables=[TABLE])
    return env


def swarm_config(args: argparse.Namespace, execution: dict | None) -> dict:
    name = f"iotswarm-bench-{uuid.uuid4().hex[:8]}"
    config = {
        "mode": "loop",
        "per_site": args.per_site,
        "shards": args.shards,
        "max_cycles": args.cycles,
        "sleep_time": 0,
        "qos": args.qos,
        "verify": True,
        "swarm_name": name,
        "mqtt_prefix": name,
    }
    run_config: dict = {"ops": {"plan_swarm": {"config": config}}}
    if execution:
        run_config["execution"] = execution
    return run_config


def one_run(env: dict[str, str], config: dict) -> dict[str, float]:
    began = time.perf_counter()
    run, entries = execute(env, "swarm_job", config)
    launch = time.perf_counter() - began
    assert run.status == dg.DagsterRunStatus.SUCCESS
    stamps = {
        e.dagster_event.event_type: e.timestamp
        for e in entries
        if e.dagster_event.event_type
        in (dg.DagsterEventType.RUN_START, dg.DagsterEventType.RUN_SUCCESS)
    }
    [report] = [
        e.dagster_event.event_specific_data.metadata
        for e in entries
        if e.dagster_event.is_successful_output and e.dagster_event.step_key == "swarm_report"
    ]
    figures = {name: value.value for name, value in report.items() if name != "summary"}
    figures["run_wall"] = (
        stamps[dg.DagsterEventType.RUN_SUCCESS] - stamps[dg.DagsterEventType.RUN_START]
    )
    figures["launch_wall"] = launch
    return figures


def report_line(label: str, i: int, f: dict, reference: float | None) -> str:
    ratio = f" ; run wall / multiprocess {f['run_wall'] / reference:.2f}x" if reference else ""
    return (
        f"{label} run {i}: {f['sent']:,} sent, {f['delivered']:,} delivered, lost {f['lost']}; "
        f"{f['devices']} devices on {f['connections']} connections; swarm "
        f"{f['msgs_per_s']:,.0f} msgs/s over {f['sent'] / f['msgs_per_s']:.1f} s; run wall "
        f"{f['run_wall']:.1f} s, launch wall {f['launch_wall']:.1f} s{ratio}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-site", type=int, default=30, help="devices per site (10 sites)")
    parser.add_argument("--cycles", type=int, default=10, help="messages per device")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting")
    args = parser.parse_args()
    devices = args.per_site * len(SITES)
    print(
        f"swarm: {devices} devices in {args.shards} shards, {args.cycles} messages each "
        f"({devices * args.cycles:,} messages), QoS {args.qos}, no sleep, verifier on; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="iotswarm-bench-celery-") as tmp:
        root = Path(tmp)
        env = prepared_env(root / "multiprocess", "multiprocess")
        execution = {"config": {"multiprocess": {"max_concurrent": args.shards + 1}}}
        reference_runs = []
        for i in range(1, args.repeats + 1):
            figures = one_run(env, swarm_config(args, execution))
            reference_runs.append(figures["run_wall"])
            print(report_line("multiprocess", i, figures, None), flush=True)
        reference = statistics.median(reference_runs)
        for workers in (1, 2):
            env = prepared_env(root / f"celery-{workers}", "celery")
            concurrency = max(args.shards // workers, 1)
            logs = root / f"celery-{workers}" / "logs"
            with celery_workers(workers, concurrency, env, logs) as group:
                label = f"celery {workers} worker(s) x {concurrency}"
                warm = []
                for i in range(1, args.repeats + 1):
                    figures = one_run(group.env, swarm_config(args, None))
                    state = "cold" if i == 1 else "warm"
                    print(report_line(f"{label} ({state})", i, figures, reference), flush=True)
                    if i > 1:
                        warm.append(figures["run_wall"])
                if warm:
                    median = statistics.median(warm)
                    print(
                        f"{label}: warm run wall median {median:.1f} s, "
                        f"{median / reference:.2f}x multiprocess",
                        flush=True,
                    )
    print(f"multiprocess run wall median {reference:.1f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
