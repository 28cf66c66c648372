"""The in-process in-flight tracker: requests running per model and version, and how
each one that finished ended.

Counting is a dict update under a lock: cheap enough for every request on the hot
path. A fleet replica keeps one of these and reports its counts; the fleet tracker
sums the reports of live replicas. A request ends served (an answer), as a client
error (the request was refused: 4xx) or as a failure (the model failed: 5xx); only
the first counts as served.

A request that ends with its time is also counted in its version's latency histogram
(`LATENCY_BUCKETS_MS`): what a rollout compares between a candidate and the stable
version, from two reports (`latency.window`). Failed and refused requests are in it
too: it is the latency of what the version answered, whatever the answer; a version
that fails fast looks fast, so judge it by its error counts beside its percentiles.
"""

from __future__ import annotations

import asyncio
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass

Key = tuple[str, str]

SERVED = "served"
CLIENT_ERROR = "client_error"
FAILED = "failed"

# Upper bounds (inclusive, as Prometheus' `le`) of the latency histogram's buckets, in
# milliseconds; one more bucket past the last holds everything slower. Six a decade
# (1, 1.5, 2, 3, 5, 7.5): 1 ms tells from 2 ms and 50 ms from 100 ms, up to 10 s.
# The bounds are part of the report's format: replicas that count with other bounds
# cannot be merged.
LATENCY_BUCKETS_MS = (
    *(0.25, 0.5, 0.75),
    *(1, 1.5, 2, 3, 5, 7.5),
    *(10, 15, 20, 30, 50, 75),
    *(100, 150, 200, 300, 500, 750),
    *(1000, 1500, 2000, 3000, 5000, 7500),
    10000,
)


@dataclass(frozen=True)
class Counts:
    """What a replica reports of its requests, per (model, version)."""

    pending: dict[Key, int]
    completed: dict[Key, int]  # finished, however they ended (what a drain counts)
    client_errors: dict[Key, int]
    model_failures: dict[Key, int]
    # Requests that ended with their time, by bucket of LATENCY_BUCKETS_MS (and +Inf last).
    latency: dict[Key, list[int]]

    @property
    def served(self) -> dict[Key, int]:
        return {
            key: done - self.client_errors.get(key, 0) - self.model_failures.get(key, 0)
            for key, done in self.completed.items()
        }


class LocalInflight:
    def __init__(self, *, poll_interval: float = 0.005) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Key, int] = {}
        self._completed: dict[Key, int] = {}
        self._errors: dict[str, dict[Key, int]] = {CLIENT_ERROR: {}, FAILED: {}}
        self._latency: dict[Key, list[int]] = {}
        self._poll_interval = poll_interval

    # The serving path.
    # Plain dict arithmetic rather than Counter's methods: this runs twice per request.
    def enter(self, model_id: str, version: str) -> None:
        key = (model_id, version)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1

    def exit(
        self, model_id: str, version: str, outcome: str = SERVED, seconds: float | None = None
    ) -> None:
        """The request is over, `outcome` how it ended; `seconds`, if given, how long it
        took (counted in the version's latency histogram, whatever the outcome)."""
        key = (model_id, version)
        bucket = None if seconds is None else bisect_left(LATENCY_BUCKETS_MS, seconds * 1000)
        with self._lock:
            left = self._pending.get(key, 0) - 1
            if left > 0:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)
            self._completed[key] = self._completed.get(key, 0) + 1
            if outcome != SERVED:
                errors = self._errors[outcome]
                errors[key] = errors.get(key, 0) + 1
            if bucket is not None:
                histogram = self._latency.get(key)
                if histogram is None:
                    histogram = self._latency[key] = [0] * (len(LATENCY_BUCKETS_MS) + 1)
                histogram[bucket] += 1

    def snapshot(self) -> Counts:
        """The counts per (model, version): what a replica reports."""
        with self._lock:
            return Counts(
                pending=dict(self._pending),
                completed=dict(self._completed),
                client_errors=dict(self._errors[CLIENT_ERROR]),
                model_failures=dict(self._errors[FAILED]),
                latency={key: list(histogram) for key, histogram in self._latency.items()},
            )

    def pending_now(self, model_id: str, version: str) -> int:
        return self._pending.get((model_id, version), 0)

    # The InflightTracker port.
    async def pending(self, model_id: str, version: str) -> int:
        return self.pending_now(model_id, version)

    async def completed(self, model_id: str, version: str) -> int:
        return self._completed.get((model_id, version), 0)

    async def wait_drained(self, model_id: str, version: str, timeout: float) -> int:
        # Requests finish on other threads as well as this loop, so poll a counter
        # rather than wait on a loop-bound event; 5 ms is far below any drain timeout.
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            remaining = self.pending_now(model_id, version)
            if remaining == 0 or time.monotonic() >= deadline:
                return remaining
            await asyncio.sleep(min(self._poll_interval, max(deadline - time.monotonic(), 0)))
