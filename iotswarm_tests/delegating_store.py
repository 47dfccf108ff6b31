"""An object store that hands every call to another, for the test stores that change one call
(``export_faults.HookedStore`` and its kin, ``killable_export.StopAfter``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from iotswarm_pipelines.export.object_store import ListedObject, ObjectStore, PutResult


class DelegatingStore:
    """``inner``'s prefix and every ``ObjectStore`` call; a subclass overrides what it changes."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.prefix = inner.prefix

    def check(self) -> None:
        self.inner.check()

    def put_many(self, objects: Iterable[tuple[str, bytes]]) -> Iterator[PutResult]:
        return self.inner.put_many(objects)

    def list_keys(self, prefix: str = "") -> list[str]:
        return self.inner.list_keys(prefix)

    def list_from(self, folder: str, start_after: str) -> Iterator[ListedObject]:
        return self.inner.list_from(folder, start_after)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def describe(self) -> str:
        return self.inner.describe()
