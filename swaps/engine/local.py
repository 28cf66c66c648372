"""Wires the in-process ports into one serving stack and its swapper (one process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .board import LocalBoard
from .hotswapper import ModelHotSwapper, SwapPolicy
from .inflight import LocalInflight
from .router import LocalRouter
from .serving import Dispatcher, routed_or_in_flight
from .spec import VersionSpec
from .versions import LocalVersions


@dataclass
class LocalStack:
    versions: LocalVersions
    router: LocalRouter
    inflight: LocalInflight
    board: LocalBoard = field(default_factory=LocalBoard)
    policy: SwapPolicy = field(default_factory=SwapPolicy)
    on_change: Callable | None = None

    def __post_init__(self) -> None:
        self.dispatcher = Dispatcher(
            router=self.router, inflight=self.inflight, versions=self.versions
        )
        self.swapper = ModelHotSwapper.over(self, policy=self.policy, on_change=self.on_change)


def local_stack(
    specs: Iterable[VersionSpec],
    *,
    policy: SwapPolicy | None = None,
    on_change: Callable | None = None,
    **versions_options,
) -> LocalStack:
    router, inflight = LocalRouter(), LocalInflight()
    return LocalStack(
        versions=LocalVersions(
            specs, in_use=routed_or_in_flight(router, inflight), **versions_options
        ),
        router=router,
        inflight=inflight,
        policy=policy or SwapPolicy(),
        on_change=on_change,
    )
