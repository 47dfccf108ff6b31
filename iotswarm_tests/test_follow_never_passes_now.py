"""``cosmos-sample --follow --speed N`` catches up fast to now, then follows the clock.

Rows dated after now would stop every export at the future-row guard, so follow mode must
never write one, whatever the speed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from iotswarm_pipelines.cosmos import catalogue, schema
from iotswarm_pipelines.cosmos.sample import generate
from iotswarm_pipelines.cosmos.sample.follow import follow

PRECIP = catalogue.PRECIP_1MIN.name
START = datetime(2026, 3, 10, 0, 0)


class Clocks:
    """A monotonic clock and a wall clock that move together, only when follow mode sleeps."""

    def __init__(self, wall: datetime) -> None:
        self.elapsed = 0.0
        self.wall0 = wall
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.elapsed

    def now(self) -> datetime:
        return self.wall0 + timedelta(seconds=self.elapsed)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += seconds


def _newest(url: str) -> datetime:
    t = schema.sa_table(PRECIP)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(t.c.DATE_TIME))).scalar()
    finally:
        engine.dispose()


def test_follow_catches_up_at_speed_then_keeps_to_the_clock(tmp_path):
    url = f"sqlite:///{tmp_path / 'cosmos.sqlite'}"
    generate(url, start=START - timedelta(hours=1), end=START, sites=["ALIC1"], tables=[PRECIP])
    clocks = Clocks(wall=START + timedelta(minutes=10))
    steps: list[tuple[datetime, datetime]] = []
    follow(
        url,
        sites=["ALIC1"],
        tables=[PRECIP],
        speed=600.0,
        steps=15,
        clock=clocks.monotonic,
        sleep=clocks.sleep,
        now=clocks.now,
        on_step=lambda when, counts: steps.append((when, clocks.now())),
    )
    assert all(when <= wall for when, wall in steps), steps
    assert _newest(url) <= clocks.now()
    # it starts where the data ends (no --start) and catches up the ten minutes at 600x ...
    assert steps[0][0] == START
    assert all(abs(s - 0.1) < 1e-6 for s in clocks.sleeps[:10]), clocks.sleeps
    # ... then waits for each minute in real time
    assert all(s > 50 for s in clocks.sleeps[10:]), clocks.sleeps
    assert steps[-1][0] == START + timedelta(minutes=14)
