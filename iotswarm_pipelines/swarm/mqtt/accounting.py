"""A shard's books: counts, the per-second timeline and the first distinct error lines.

Publishing, acknowledging and connecting all write here; `snapshot` folds in the verifier's
view and hands out a copy, so progress reports never share lists with the running shard.
"""

from __future__ import annotations

import time

from iotswarm_pipelines.swarm.mqtt.types import ShardResult
from iotswarm_pipelines.swarm.mqtt.verifier import Timeline, Verifier

MAX_ERRORS = 20


class Accounts:
    def __init__(self, shard: int, devices: int) -> None:
        self.started_at = time.time()
        self.timeline = Timeline(self.started_at)
        self.result = ShardResult(shard=shard, devices=devices, connections=0)
        self.result.started_at = self.started_at
        self._errors: dict[str, None] = {}  # insertion-ordered set: each distinct line once
        self.publish_latencies: list[float] | None = None
        """Seconds from publish to PUBACK since the live metrics last took them (None: off)."""

    def error(self, line: str) -> None:
        if len(self._errors) < MAX_ERRORS:
            self._errors[line] = None

    def snapshot(self, verifier: Verifier | None) -> ShardResult:
        result = self.result
        result.timeline = self.timeline.rows()
        result.ended_at = time.time()
        if verifier is not None:
            result.verified = True
            result.delivered = verifier.delivered
            result.duplicated = verifier.duplicated
            result.lost = verifier.outstanding
            result.latencies_ms = list(verifier.latencies.samples)
            result.latency_times = list(verifier.latencies.times)
            for line in verifier.errors:
                self.error(line)
        result.errors = list(self._errors)
        copy = ShardResult(**vars(result))
        if verifier is not None:  # its connection counts as the publishers' do
            copy.connect_failures += verifier.connect_failures
        for name in ("phase_marks", "phase_messages", "phase_reconnects"):
            setattr(copy, name, dict(getattr(result, name)))
        copy.control = {kind: counts.copy() for kind, counts in result.control.items()}
        copy.state_transitions = dict(result.state_transitions)
        copy.control_faults = dict(result.control_faults)
        return copy
