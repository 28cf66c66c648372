"""The control plane's one way to the engine, and the database-to-Redis republish.

Django code is synchronous; the engine is async. `run(operation)` opens the engine for
one call (a `Fleet` on REDIS_URL under HOTSWAP_NAMESPACE, with the HOTSWAP_* policy),
runs the operation on an event loop, and closes it again. It goes through asgiref's
`async_to_sync`, so an `on_change` observer that wraps its ORM writes in
`sync_to_async` writes them on the calling thread, in the caller's transaction.

Tests put the engine's in-process stack behind the same seam (`use_engine`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import connections

from swaps.engine.errors import SwapError
from swaps.engine.fleet import Fleet
from swaps.engine.fleet_versions import Quarantine
from swaps.engine.hotswapper import ModelHotSwapper, Observer, SwapPolicy
from swaps.engine.ports import InflightTracker, Router, StatusBoard, VersionManager
from swaps.engine.reports import ReplicaReport
from swaps.engine.seal import Seal
from swaps.engine.spec import VersionSpec
from swaps.models import ModelVersion, ServedModel, Swap
from swaps.refusals import from_engine

log = logging.getLogger(__name__)

Key = tuple[str, str]
T = TypeVar("T")
# How often the control plane polls replica reports while it waits for acks and loads:
# the floor of a rollback's latency, so well under the fleet's default.
POLL_INTERVAL = 0.005


class Engine(Protocol):
    """What the control plane needs from the engine: a `Fleet`, or a stand-in for tests."""

    versions: VersionManager
    router: Router
    inflight: InflightTracker
    board: StatusBoard

    async def publish_spec(self, spec: VersionSpec) -> None: ...

    async def republish(
        self,
        *,
        specs: Iterable[VersionSpec],
        routes: dict[str, tuple[str, list[str]]],
        settled: Iterable[str] = (),
        quarantined: Mapping[Key, Quarantine] | None = None,
    ) -> None: ...

    async def quarantined(self) -> dict[Key, Quarantine]: ...

    async def set_quarantine(
        self, model_id: str, version: str, quarantine: Quarantine | None
    ) -> None: ...

    async def is_empty(self) -> bool: ...

    async def replicas(self) -> list[ReplicaReport]:
        """What each live replica last reported (a rollout's analysis reads it)."""
        ...

    def swapper(
        self, *, policy: SwapPolicy | None = None, on_change: Observer | None = None
    ) -> ModelHotSwapper: ...


EngineOpener = Callable[[], AbstractAsyncContextManager[Engine]]


@contextlib.asynccontextmanager
async def open_fleet() -> AsyncIterator[Engine]:
    fleet = Fleet.from_url(
        settings.REDIS_URL,
        namespace=settings.HOTSWAP_NAMESPACE,
        seal=Seal(settings.HOTSWAP_FLEET_KEYS),
        heartbeat_ttl=settings.HOTSWAP_HEARTBEAT_TTL,
        ack_timeout=settings.HOTSWAP_ACK_TIMEOUT,
        load_timeout=settings.HOTSWAP_LOAD_TIMEOUT,
        poll_interval=POLL_INTERVAL,
    )
    try:
        yield fleet
    finally:
        await fleet.redis.aclose()


_opener: EngineOpener = open_fleet


@contextlib.contextmanager
def use_engine(opener: EngineOpener) -> Iterator[None]:
    """Run the control plane against another engine for the block (tests)."""
    global _opener
    previous, _opener = _opener, opener
    try:
        yield
    finally:
        _opener = previous


def policy() -> SwapPolicy:
    return SwapPolicy(
        drain_timeout=settings.HOTSWAP_DRAIN_TIMEOUT, keep_warm=settings.HOTSWAP_KEEP_WARM
    )


def run(operation: Callable[[Engine], Awaitable[T]]) -> T:
    """Run `operation(engine)` from synchronous code; republish first if Redis is empty.

    The engine's refusals and failures come out as the control plane's (a `Refused`):
    this is where the domain meets the engine, so the one place they are translated.
    """

    async def main() -> T:
        async with _opener() as engine:
            if await engine.is_empty():
                await republish(engine)
            return await operation(engine)

    return _blocking(main)


def _blocking(main: Callable[[], Awaitable[T]]) -> T:
    try:
        return async_to_sync(main)()
    except SwapError as exc:
        raise from_engine(exc) from exc


async def ensure_specs(engine: Engine, specs: Iterable[VersionSpec]) -> None:
    """Publish the versions the fleet does not know yet (registration may have missed it)."""
    for spec in specs:
        if await engine.versions.spec(spec.model_id, spec.version) is None:
            await engine.publish_spec(spec)


def specs_of(versions: Iterable[ModelVersion | None]) -> list[VersionSpec]:
    """The specs of these versions, read here: the async side must not touch the ORM."""
    return [version.as_spec() for version in versions if version is not None]


# -- republishing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The fleet state the database holds: every version, and each served model's route."""

    specs: list[VersionSpec]
    routes: dict[str, tuple[str, list[str]]]  # model -> (active version, versions served)
    running: frozenset[str]  # models with an operation under way
    models: frozenset[str] = frozenset()
    quarantined: dict[Key, Quarantine] = field(default_factory=dict)


def database_snapshot() -> Snapshot:
    versions = list(ModelVersion.objects.select_related("served_model"))
    served: dict[str, list[ModelVersion]] = {}
    for version in sorted(
        (v for v in versions if v.first_served_at), key=lambda v: (v.first_served_at, v.pk)
    ):
        served.setdefault(version.served_model.name, []).append(version)
    routes = {}
    for model in ServedModel.objects.select_related("active_version"):
        if model.active_version is None:
            continue
        history = [v.version for v in served.get(model.name, [])]
        routes[model.name] = (model.active_version.version, history)
    running = Swap.objects.filter(state__in=Swap.RUNNING).values_list(
        "served_model__name", flat=True
    )
    quarantined = {
        (v.served_model.name, v.version): Quarantine(
            reason=v.quarantine_reason, replica="", at=v.quarantined_at.timestamp()
        )
        for v in versions
        if v.quarantined_at is not None
    }
    return Snapshot(
        specs=[v.as_spec() for v in versions],
        routes=routes,
        running=frozenset(running),
        models=frozenset(ServedModel.objects.values_list("name", flat=True)),
        quarantined=quarantined,
    )


async def republish(engine: Engine, *, keep_running: bool = False) -> Snapshot:
    """Write the database's fleet state to Redis.

    With `keep_running`, models with an operation under way (in the database or on the
    engine's status board) keep the route Redis has: the operation owns it. Without
    it (Redis came back empty) every route is restored, as nothing else has one.
    """
    snapshot = await sync_to_async(database_snapshot)()
    routes = dict(snapshot.routes)
    settled = set(snapshot.models - snapshot.running)
    if keep_running:
        for model_id in snapshot.models:
            status = await engine.board.get(model_id)
            if model_id in snapshot.running or (status is not None and status.state.running):
                routes.pop(model_id, None)
                settled.discard(model_id)
    await engine.republish(
        specs=snapshot.specs,
        routes=routes,
        settled=settled,
        quarantined=snapshot.quarantined,
    )
    log.info(
        "republished %d versions and %d routes from the database",
        len(snapshot.specs),
        len(routes),
    )
    return snapshot


def republish_from_database(*, keep_running: bool = True) -> Snapshot:
    """Republish the fleet state (specs, routes, desired versions) from the database.

    Models with an operation under way keep their route (`republish`), unless Redis
    is empty: then nothing else holds a route, and every one is restored.
    """

    async def main() -> Snapshot:
        async with _opener() as engine:
            empty = await engine.is_empty()
            return await republish(engine, keep_running=keep_running and not empty)

    return _blocking(main)


def republish_if_empty() -> bool:
    """Republish everything if Redis lost the fleet's state; say whether it had."""

    async def main() -> bool:
        async with _opener() as engine:
            if not await engine.is_empty():
                return False
            await republish(engine)
            return True

    return _blocking(main)


def republish_at_startup() -> None:
    """Called as a web or worker process starts; a fleet that is down must not stop it.

    Runs on a thread of its own: an ASGI server may import the application from inside
    its event loop, where `async_to_sync` cannot run.
    """
    if not settings.HOTSWAP_REPUBLISH_ON_START:
        return
    thread = threading.Thread(target=_republish_quietly, name="republish at start-up")
    thread.start()
    thread.join()


def _republish_quietly() -> None:
    try:
        republish_from_database()
    except Exception as exc:  # Redis or the database down: serve on; the sweep retries
        log.warning("could not republish the fleet state at start-up: %s", exc)
    finally:
        connections.close_all()
