"""A realistic synthetic COSMOS database: the embedded default data of this project."""

from iotswarm_pipelines.cosmos.sample.follow import follow
from iotswarm_pipelines.cosmos.sample.generator import (
    SampleError,
    default_range,
    generate,
    summarise,
)

__all__ = ["SampleError", "default_range", "follow", "generate", "summarise"]
