"""The in-process router: a local route table with an atomic flip and a rising epoch.

The serving path resolves a route and registers its request in flight under the same
lock the flip takes (`Dispatcher.begin`), so once `flip` returns no new unpinned
request can reach the old version and every request that already chose it is counted.
A replica in a fleet keeps one of these as its local copy of the routes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    version: str
    epoch: int


class LocalRouter:
    def __init__(self) -> None:
        # Shared with the serving path; held for a dict read and a counter bump at most.
        self.lock = threading.Lock()
        self._routes: dict[str, Route] = {}
        self._history: dict[str, list[str]] = {}

    # The serving path's synchronous reads.
    def resolve(self, model_id: str) -> str | None:
        route = self._routes.get(model_id)
        return route.version if route else None

    def routes(self) -> dict[str, Route]:
        return dict(self._routes)

    def apply(self, model_id: str, version: str, epoch: int) -> bool:
        """Install a route decided elsewhere (a fleet replica's copy); stale epochs lose."""
        with self.lock:
            current = self._routes.get(model_id)
            if current is not None and current.epoch >= epoch:
                return False
            self._set(model_id, version, epoch)
            return True

    def replace(self, model_id: str, version: str, epoch: int) -> None:
        """Install a route whatever its epoch: the fleet's state was published anew."""
        with self.lock:
            self._set(model_id, version, epoch)

    def _set(self, model_id: str, version: str, epoch: int) -> None:
        self._routes[model_id] = Route(version=version, epoch=epoch)
        history = self._history.setdefault(model_id, [])
        if not history or history[-1] != version:
            history.append(version)

    # The Router port.
    async def active(self, model_id: str) -> str | None:
        return self.resolve(model_id)

    async def epoch(self, model_id: str) -> int:
        route = self._routes.get(model_id)
        return route.epoch if route else 0

    async def history(self, model_id: str) -> list[str]:
        return list(self._history.get(model_id, ()))

    async def flip(self, model_id: str, version: str) -> int:
        with self.lock:
            current = self._routes.get(model_id)
            epoch = (current.epoch if current else 0) + 1
            self._set(model_id, version, epoch)
            return epoch
