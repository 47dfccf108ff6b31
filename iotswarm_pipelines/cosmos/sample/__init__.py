"""A realistic synthetic COSMOS database: the embedded default data of this project.

The generator's names load on first use (PEP 562), so ``cosmos-sample --help`` (``sample.cli``,
in this package) answers before numpy and SQLAlchemy are imported. Follow mode is
``sample.follow.follow``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iotswarm_pipelines.cosmos.sample.generator import (
        SampleError,
        default_range,
        generate,
        summarise,
    )

__all__ = ["SampleError", "default_range", "generate", "summarise"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.generator"), name)
