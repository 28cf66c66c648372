"""The in-process status board: each model's current swap status, claimed atomically."""

from __future__ import annotations

import threading

from .results import SwapStatus


class LocalBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: dict[str, SwapStatus] = {}

    async def begin(self, status: SwapStatus) -> SwapStatus | None:
        with self._lock:
            current = self._statuses.get(status.model_id)
            if current is not None and current.state.running:
                return current
            self._statuses[status.model_id] = status
            return None

    async def put(self, status: SwapStatus) -> None:
        with self._lock:
            self._statuses[status.model_id] = status

    async def get(self, model_id: str) -> SwapStatus | None:
        return self._statuses.get(model_id)
