"""Token buckets: connect ramp-up and per-connection publish caps."""

from __future__ import annotations

import time


class TokenBucket:
    """`rate` tokens per second, bursting up to one second's worth; rate 0 means no limit."""

    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, now: float | None = None) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = 1.0
        self._stamp = time.monotonic() if now is None else now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        if self._rate <= 0:
            return True
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def available(self, now: float) -> int:
        if self._rate <= 0:
            return 1 << 30
        self._refill(now)
        return int(self._tokens)

    def wait_time(self, now: float) -> float:
        """Seconds until the next token (0 when one is available)."""
        if self._rate <= 0:
            return 0.0
        self._refill(now)
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self._rate


def backoff_delay(attempt: int, min_delay: float, max_delay: float) -> float:
    """Exponential reconnect delay: min_delay doubled per failed attempt, capped at max_delay."""
    return min(max_delay, min_delay * (2 ** min(attempt, 30)))
