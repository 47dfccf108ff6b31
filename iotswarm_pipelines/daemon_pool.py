"""Worker threads that never hold up the exit of an interrupted process (uploads, site scans,
a shard's engine), handing back ``concurrent.futures`` futures."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class DaemonPool:
    """A fixed set of daemon worker threads (uploads, site scans, a shard's engine).

    ``ThreadPoolExecutor`` joins its workers when the interpreter exits, so after Ctrl-C a
    process would still wait for every request stuck on a silent endpoint (up to the timeouts
    times the attempts); daemon workers let an interrupted export exit at once. An upload cut
    short that way is simply not stored, and the watermark never covered it.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, fn, args))
        return future

    def shutdown(self, wait: bool) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
