"""A real export process that stops after its Nth stored object, for the parent to SIGKILL.

``python -m iotswarm_tests.killable_export SPEC`` with SPEC a JSON object: ``url``,
``table``, ``state_dir``, ``stop_after`` and either ``root`` (a local folder) or ``endpoint`` and
``bucket`` (S3). Once ``stop_after`` objects are stored it prints ``stored <N>`` and every further
upload blocks, so nothing else is stored and the state is not written until the parent kills it.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable, Iterator

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.cosmos.source import CosmosSource
from iotswarm_pipelines.export.object_store import (
    LocalObjectStore,
    ObjectStore,
    PutResult,
    S3ObjectStore,
    put_concurrently,
)
from iotswarm_pipelines.export.pipeline import export_table
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_tests.delegating_store import DelegatingStore

PREFIX = "fdri/cosmos_swarm"


def make_store(spec: dict) -> ObjectStore:
    if "root" in spec:
        return LocalObjectStore(root=spec["root"], prefix=PREFIX)
    from dagster_aws.s3 import S3Resource

    return S3ObjectStore(
        s3=S3Resource(endpoint_url=spec["endpoint"], region_name="eu-west-2"),
        bucket=spec["bucket"],
        prefix=PREFIX,
    )


class StopAfter(DelegatingStore):
    """Stores through ``inner`` until ``limit`` objects are stored, then blocks every upload."""

    def __init__(self, inner: ObjectStore, limit: int) -> None:
        super().__init__(inner)
        self.limit = limit
        self.stored = 0
        self.lock = threading.Lock()

    def _put(self, key: str, body: bytes) -> None:
        with self.lock:  # holding it while blocked stops every other upload thread too
            if self.stored >= self.limit:
                threading.Event().wait()
            (result,) = self.inner.put_many([(key, body)])
            if result.error:
                raise RuntimeError(result.error)
            self.stored += 1
            if self.stored == self.limit:
                print(f"stored {self.stored}", flush=True)

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]:
        return put_concurrently(self._put, objects, 4)


def main() -> None:
    spec = json.loads(sys.argv[1])
    export_table(
        catalogue.get_table(spec["table"]),
        source=CosmosSource(url=spec["url"]),
        store=StopAfter(make_store(spec), spec["stop_after"]),
        state=StateStore(state_dir=spec["state_dir"]),
        fallback_hours=None,
    )
    print("finished", flush=True)


if __name__ == "__main__":
    main()
