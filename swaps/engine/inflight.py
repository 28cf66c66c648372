"""The in-process in-flight tracker: requests running per model and version, and how
each one that finished ended.

Counting is a dict update under a lock: cheap enough for every request on the hot
path. A fleet replica keeps one of these and reports its counts; the fleet tracker
sums the reports of live replicas. A request ends served (an answer), as a client
error (the request was refused: 4xx) or as a failure (the model failed: 5xx); only
the first counts as served.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

Key = tuple[str, str]

SERVED = "served"
CLIENT_ERROR = "client_error"
FAILED = "failed"


@dataclass(frozen=True)
class Counts:
    """What a replica reports of its requests, per (model, version)."""

    pending: dict[Key, int]
    completed: dict[Key, int]  # finished, however they ended (what a drain counts)
    client_errors: dict[Key, int]
    model_failures: dict[Key, int]

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
        self._poll_interval = poll_interval

    # The serving path.
    # Plain dict arithmetic rather than Counter's methods: this runs twice per request.
    def enter(self, model_id: str, version: str) -> None:
        key = (model_id, version)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1

    def exit(self, model_id: str, version: str, outcome: str = SERVED) -> None:
        key = (model_id, version)
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

    def snapshot(self) -> Counts:
        """The counts per (model, version): what a replica reports."""
        with self._lock:
            return Counts(
                pending=dict(self._pending),
                completed=dict(self._completed),
                client_errors=dict(self._errors[CLIENT_ERROR]),
                model_failures=dict(self._errors[FAILED]),
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
