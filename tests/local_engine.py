"""The engine's in-process stack behind the control plane's engine seam (unit tests).

`fleet_state.run` normally opens a Redis-backed `Fleet`; unit tests of the domain,
the API and the commands open this instead: the same `ModelHotSwapper` over the
in-process ports, with real models loaded and a real serving path (`dispatcher`) to
hold requests in flight. Integration tests use the real fleet and real processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

from swaps.engine.hotswapper import ModelHotSwapper, Observer, SwapPolicy
from swaps.engine.local import LocalStack, local_stack
from swaps.engine.spec import VersionSpec


class LocalEngine:
    def __init__(self, specs: Iterable[VersionSpec] = ()) -> None:
        self.stack: LocalStack = local_stack(specs)
        self.versions = self.stack.versions
        self.router = self.stack.router
        self.inflight = self.stack.inflight
        self.board = self.stack.board
        self.dispatcher = self.stack.dispatcher
        self.empty = False  # a test sets it to play a Redis that came back empty
        self.republished: list[dict[str, tuple[str, list[str]]]] = []

    async def publish_spec(self, spec: VersionSpec) -> None:
        self.versions.register(spec)

    async def republish(
        self, *, specs: Iterable[VersionSpec], routes: dict[str, tuple[str, list[str]]]
    ) -> None:
        for spec in specs:
            self.versions.register(spec)
        for model_id, (active, history) in routes.items():
            self.versions.load_now(model_id, active)
            for version in [*history, active]:
                if self.router.resolve(model_id) != version:
                    self.router.apply(model_id, version, await self.router.epoch(model_id) + 1)
        self.republished.append(routes)
        self.empty = False

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
