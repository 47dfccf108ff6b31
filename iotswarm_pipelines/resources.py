"""Resources per deployment: embedded defaults for ``local``, environment-driven for ``prod``."""

from __future__ import annotations

from typing import Any

from iotswarm_pipelines import settings


def build_resources() -> dict[str, Any]:
    settings.deployment()  # fail early on a mistyped deployment name
    return {}
