"""The Dagster side of an adapter: a resource that holds its settings and builds it.

An adapter (the COSMOS source, an object store, a state store) is a plain class that subclasses
its settings model, so code without Dagster (commands, tests, the swarm's shards) makes and uses
it directly. Its resource subclasses the same settings model, so each setting's name, default,
check and help are declared once and show in the launchpad, and hands Dagster code the adapter
it builds, not itself: assets, ops, sensors and checks ask for ``dg.ResourceParam[<Adapter>]``.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

import dagster as dg
from pydantic import BaseModel

Adapter = TypeVar("Adapter", bound=BaseModel)


class AdapterResource(dg.ConfigurableResource[Adapter]):
    """Settings in Dagster config (``dg.EnvVar`` allowed); each run, tick or check gets an
    adapter of its own, as it got a resource of its own before."""

    adapter: ClassVar[type[BaseModel]]

    def build(self) -> Adapter:
        """The adapter with these settings (values as configured: read in a run, environment
        variables are resolved)."""
        values = {name: getattr(self, name) for name in self.adapter.model_fields}
        return self.adapter(**values)  # type: ignore[return-value]

    def create_resource(self, context: dg.InitResourceContext) -> Adapter:
        return self.build()
