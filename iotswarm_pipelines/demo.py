"""``make demo``: every main job on embedded defaults, with nothing prepared but this repository.

It writes a sample COSMOS database (SQLite), exports every table into a local object folder
through the live export asset, and runs a short device swarm against a private Mosquitto that it
starts. Runs go to the project-local Dagster instance (``DAGSTER_HOME``), so ``make dev`` shows
them afterwards.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from iotswarm_pipelines import settings
from iotswarm_pipelines.clock import utc_now


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def main() -> int:
    """Exit 1 with one line when a step fails (its run is in ``make dev``), 0 otherwise."""
    try:
        return _run()
    except RuntimeError as exc:
        print(f"make demo: error: {exc}", file=sys.stderr)
        return 1


def _run() -> int:
    data_dir = settings.data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.sample_db_url()

    _banner(f"1/3 sample COSMOS database: {settings.sample_db_path()}")
    from iotswarm_pipelines.cosmos.sample import generate, summarise

    end = utc_now().replace(minute=0, second=0, microsecond=0)
    generate(url, start=end - timedelta(days=2), end=end, progress=True)
    print(summarise(url))

    _banner(f"2/3 live export of every table into {data_dir / 'objects'}")
    from iotswarm_pipelines.export.demo import run_demo_export, run_demo_health
    from iotswarm_pipelines.resources import build_resources

    resources = build_resources()
    run_demo_export(resources, echo=lambda text: print(text, flush=True))
    print(run_demo_health(resources), flush=True)

    _banner("3/3 device swarm against a private Mosquitto")
    from iotswarm_pipelines.local_broker import LocalMosquitto
    from iotswarm_pipelines.swarm.demo import run_demo_swarm

    with LocalMosquitto(data_dir / "mosquitto") as broker:
        print(f"broker: mqtt://{broker.host}:{broker.port}")
        print(run_demo_swarm(url, broker.host, broker.port))

    _banner("where things are")
    print(f"sample database : {settings.sample_db_path()}")
    print(f"exported objects: {data_dir / 'objects'}")
    print(f"watermark state : {data_dir / 'state'}")
    print("Dagster UI      : `make dev`, then open http://127.0.0.1:3000 (runs above are listed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
