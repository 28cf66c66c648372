"""The in-process router: a local route table with an atomic flip and a rising epoch.

The serving path resolves a route and registers its request in flight under the same
lock the flip takes (`Dispatcher.begin`), so once `flip` returns no new unpinned
request can reach the old version and every request that already chose it is counted.
A replica in a fleet keeps one of these as its local copy of the routes.

A route may carry a `Split` while a rollout runs: a canary sends `weight` percent of
the unpinned requests to the candidate (chosen here, per request, with no call to
anyone); a shadow sends them all to the stable version and copies `weight` percent of
them to the candidate. A request with a routing key lands on the same side for the
same key and weight, on every replica.
"""

from __future__ import annotations

import random
import threading
import zlib
from dataclasses import dataclass

# Version names are letters, digits, '.', '_' and '-' (models.NAME_PATTERN), so these
# separate a route's parts unambiguously in its one Redis field: "1", "1|2=10", "1|2~25".
CANARY_MARK, SHADOW_MARK, SPLIT_MARK = "=", "~", "|"


@dataclass(frozen=True)
class Split:
    candidate: str
    weight: int  # percent, 0-100: of unpinned requests (canary) or of copies (shadow)
    shadow: bool = False

    @property
    def mode(self) -> str:
        return "shadow" if self.shadow else "canary"

    def as_dict(self) -> dict:
        return {"candidate": self.candidate, "weight": self.weight, "mode": self.mode}


@dataclass(frozen=True)
class Route:
    version: str  # the stable version: what serves when the split says otherwise
    epoch: int
    split: Split | None = None

    def serves(self, version: str) -> bool:
        """Whether requests may reach `version` through this route (not pinned ones)."""
        return version == self.version or (
            self.split is not None and self.split.candidate == version
        )


def encode_route(version: str, split: Split | None = None) -> str:
    if split is None:
        return version
    mark = SHADOW_MARK if split.shadow else CANARY_MARK
    return f"{version}{SPLIT_MARK}{split.candidate}{mark}{split.weight}"


def decode_route(value: str) -> tuple[str, Split | None]:
    """The stable version and the split of a route's field ("1", "1|2=10", "1|2~25")."""
    version, _, rest = value.partition(SPLIT_MARK)
    if not rest:
        return version, None
    shadow = SHADOW_MARK in rest
    candidate, _, weight = rest.partition(SHADOW_MARK if shadow else CANARY_MARK)
    return version, Split(candidate=candidate, weight=int(weight), shadow=shadow)


def describe_route(value: str) -> str:
    """A route's field in words: "version 1", "version 1 with a 10 % canary of 2"."""
    version, split = decode_route(value)
    if split is None:
        return f"version {version}"
    return f"version {version} with a {split.weight} % {split.mode} of {split.candidate}"


def key_share(key: str) -> float:
    """Where a routing key falls in [0, 100): the same on every replica and process
    (crc32, not hash(), which Python salts per process)."""
    return (zlib.crc32(key.encode()) % 10_000) / 100


def takes_share(weight: int, key: str | None) -> bool:
    """Whether a request falls in the `weight` percent share: by its key, else at random."""
    if weight >= 100:
        return True
    if weight <= 0:
        return False
    return (key_share(key) if key is not None else random.random() * 100) < weight


class LocalRouter:
    def __init__(self) -> None:
        # Shared with the serving path; held for a dict read and a counter bump at most.
        self.lock = threading.Lock()
        self._routes: dict[str, Route] = {}
        self._history: dict[str, list[str]] = {}

    # The serving path's synchronous reads.
    def resolve(self, model_id: str, key: str | None = None) -> str | None:
        """The version that answers this unpinned request: the stable one, or the
        canary's candidate for its share (by `key`, the request's routing key)."""
        route = self._routes.get(model_id)
        if route is None:
            return None
        split = route.split
        if split is None or split.shadow or not takes_share(split.weight, key):
            return route.version
        return split.candidate

    def shadow(self, model_id: str, key: str | None = None) -> str | None:
        """The candidate this request's copy goes to, in shadow mode and in its share."""
        route = self._routes.get(model_id)
        split = route.split if route is not None else None
        if split is None or not split.shadow or not takes_share(split.weight, key):
            return None
        return split.candidate

    def stable(self, model_id: str) -> str | None:
        route = self._routes.get(model_id)
        return route.version if route else None

    def serves(self, model_id: str, version: str) -> bool:
        """Whether the route sends requests (or copies) to `version`: it must stay loaded."""
        route = self._routes.get(model_id)
        return route is not None and route.serves(version)

    def routes(self) -> dict[str, Route]:
        return dict(self._routes)

    def apply(self, model_id: str, version: str, epoch: int, split: Split | None = None) -> bool:
        """Install a route decided elsewhere (a fleet replica's copy); stale epochs lose."""
        with self.lock:
            current = self._routes.get(model_id)
            if current is not None and current.epoch >= epoch:
                return False
            self._set(model_id, version, epoch, split)
            return True

    def replace(self, model_id: str, version: str, epoch: int, split: Split | None = None) -> None:
        """Install a route whatever its epoch: the fleet's state was published anew."""
        with self.lock:
            self._set(model_id, version, epoch, split)

    def _set(self, model_id: str, version: str, epoch: int, split: Split | None) -> None:
        self._routes[model_id] = Route(version=version, epoch=epoch, split=split)
        history = self._history.setdefault(model_id, [])
        if not history or history[-1] != version:
            history.append(version)

    # The Router port.
    async def active(self, model_id: str) -> str | None:
        return self.stable(model_id)

    async def split(self, model_id: str) -> Split | None:
        route = self._routes.get(model_id)
        return route.split if route else None

    async def epoch(self, model_id: str) -> int:
        route = self._routes.get(model_id)
        return route.epoch if route else 0

    async def history(self, model_id: str) -> list[str]:
        return list(self._history.get(model_id, ()))

    async def flip(self, model_id: str, version: str, split: Split | None = None) -> int:
        with self.lock:
            current = self._routes.get(model_id)
            epoch = (current.epoch if current else 0) + 1
            self._set(model_id, version, epoch, split)
            return epoch
