"""The engine's in-process stack behind the control plane's engine seam (unit tests).

`fleet_state.run` normally opens a Redis-backed `Fleet`; unit tests of the domain,
the API and the commands open this instead: the same `ModelHotSwapper` over the
in-process ports, with real models loaded and a real serving path (`dispatcher`) to
hold requests in flight. Integration tests use the real fleet and real processes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping

from swaps.engine import runtimes
from swaps.engine.fleet_versions import Quarantine
from swaps.engine.hotswapper import ModelHotSwapper, Observer, SwapPolicy
from swaps.engine.local import LocalStack, local_stack
from swaps.engine.ports import LoadedModel
from swaps.engine.spec import VersionSpec

_LOADED: dict[str, LoadedModel] = {}


def load_once(spec: VersionSpec) -> LoadedModel:
    """`runtimes.load`, once per spec and test session (a failed load is not kept).

    A loaded model is immutable and safe to share; loading it again for every test only
    repeated the runtimes' own tests (tests/engine/test_runtimes.py) through the
    instrumented loader, two garbage collections and tracemalloc each time.
    """
    key = json.dumps(spec.as_dict(), sort_keys=True)
    if key not in _LOADED:
        _LOADED[key] = runtimes.load(spec)
    return _LOADED[key]


class LocalEngine:
    def __init__(self, specs: Iterable[VersionSpec] = ()) -> None:
        self.stack: LocalStack = local_stack(specs, loader=load_once)
        self.versions = self.stack.versions
        self.router = self.stack.router
        self.inflight = self.stack.inflight
        self.board = self.stack.board
        self.dispatcher = self.stack.dispatcher
        self.empty = False  # a test sets it to play a Redis that came back empty
        self.republished: list[dict[str, tuple[str, list[str]]]] = []
        # What the fleet's quarantine (Redis) holds; a test writes here as a replica would.
        self.quarantines: dict[tuple[str, str], Quarantine] = {}

    async def publish_spec(self, spec: VersionSpec) -> None:
        self.versions.register(spec)

    async def republish(
        self,
        *,
        specs: Iterable[VersionSpec],
        routes: dict[str, tuple[str, list[str]]],
        settled: Iterable[str] = (),
        quarantined: Mapping[tuple[str, str], Quarantine] | None = None,
    ) -> None:
        self.quarantines.update(quarantined or {})
        for spec in specs:
            self.versions.register(spec)
        for model_id, (active, history) in routes.items():
            self.versions.load_now(model_id, active)
            for version in [*history, active]:
                if self.router.resolve(model_id) != version:
                    self.router.apply(model_id, version, await self.router.epoch(model_id) + 1)
        self.republished.append(routes)
        self.empty = False

    async def quarantined(self) -> dict[tuple[str, str], Quarantine]:
        return dict(self.quarantines)

    async def set_quarantine(
        self, model_id: str, version: str, quarantine: Quarantine | None
    ) -> None:
        if quarantine is None:
            self.quarantines.pop((model_id, version), None)
        else:
            self.quarantines[model_id, version] = quarantine

    async def is_empty(self) -> bool:
        return self.empty

    def swapper(
        self, *, policy: SwapPolicy | None = None, on_change: Observer | None = None
    ) -> ModelHotSwapper:
        return ModelHotSwapper.over(self, policy=policy, on_change=on_change)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[LocalEngine]:
        yield self

    def route(self, model_id: str) -> str | None:
        return self.router.resolve(model_id)
