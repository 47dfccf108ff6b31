"""Where the embedded defaults live, and which deployment the definitions are built for.

One switch, ``IOTSWARM_DEPLOYMENT`` (``local`` or ``prod``), picks the resources; everything
else is the same code. ``local`` needs nothing but this repository: a sample SQLite database,
a folder of objects and a broker on loopback, all under ``IOTSWARM_DATA_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

LOCAL = "local"
PROD = "prod"
DEPLOYMENTS = (LOCAL, PROD)


def deployment() -> str:
    value = os.environ.get("IOTSWARM_DEPLOYMENT", LOCAL).strip().lower()
    if value not in DEPLOYMENTS:
        raise ValueError(
            f"IOTSWARM_DEPLOYMENT={value!r} is not a deployment: set it to one of {DEPLOYMENTS}"
        )
    return value


def data_dir() -> Path:
    """Folder for the embedded defaults (sample database, objects, state, swarm sessions)."""
    return Path(os.environ.get("IOTSWARM_DATA_DIR", Path.cwd() / ".demo")).resolve()


def sample_db_path() -> Path:
    return data_dir() / "cosmos.sqlite"


def sample_db_url() -> str:
    return f"sqlite:///{sample_db_path()}"


def dagster_home(explicit: str | None = None) -> str | None:
    """The Dagster instance the commands record their runs in: ``explicit``, else
    ``DAGSTER_HOME`` (the one ``make dev``'s UI shows), else None for a throw-away one."""
    return explicit or os.environ.get("DAGSTER_HOME") or None
