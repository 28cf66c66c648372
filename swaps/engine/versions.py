"""The in-process version manager: specs registered here, models loaded into this process.

Loading and the health check's sample inference run on worker threads, so a slow load
or a hanging model never stalls the event loop that serves other requests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable

import psutil

from . import health, runtimes
from .compatibility import Signature
from .errors import LoadError, UnknownModel, UnknownVersion
from .ports import LoadedModel
from .results import HealthCheckResult
from .spec import VersionSpec

Key = tuple[str, str]
UNKNOWN_SPEC = "version {version!r} of model {model_id!r} is not registered here"
NO_ROOM = (
    "cannot load version {version!r} of model {model_id!r}: the host has "
    "{available:.1f} MB available and the version may use up to {limit:.1f} MB"
)
HEALTH_TIMEOUT = "sample inference did not finish within {seconds:g} s"
# How long a retirement waits before looking again when the version is still busy.
RETIRE_RETRY_SECONDS = 0.5


def host_memory_available() -> int:
    return psutil.virtual_memory().available


class LocalVersions:
    def __init__(
        self,
        specs: Iterable[VersionSpec] = (),
        *,
        loader: Callable[[VersionSpec], LoadedModel] = runtimes.load,
        health_timeout: float = 10.0,
        memory_available: Callable[[], int] = host_memory_available,
        replica: str = "local",
        in_use: Callable[[str, str], bool] = lambda model_id, version: False,
    ) -> None:
        """`in_use(model_id, version)`: whether a version must stay loaded (routed to, or
        requests in flight on it), from whoever owns the router and the in-flight
        counts (`serving.routed_or_in_flight`); an unload waits while it says so."""
        self._specs: dict[Key, VersionSpec] = {}
        self._loaded: dict[Key, LoadedModel] = {}
        self._retirements: dict[Key, threading.Timer] = {}
        self._health: dict[Key, HealthCheckResult] = {}  # the last check since each load
        self._lock = threading.Lock()
        self._loading: dict[Key, threading.Lock] = {}
        self._loader = loader
        self._health_timeout = health_timeout
        self._memory_available = memory_available
        self.replica = replica
        self.in_use = in_use
        for spec in specs:
            self.register(spec)

    def register(self, spec: VersionSpec) -> None:
        with self._lock:
            self._specs[spec.model_id, spec.version] = spec

    # The serving path's synchronous read.
    def loaded(self, model_id: str, version: str) -> LoadedModel | None:
        return self._loaded.get((model_id, version))

    def loaded_keys(self) -> list[Key]:
        return list(self._loaded)

    # The VersionManager port.
    async def models(self) -> list[str]:
        return sorted({model_id for model_id, _ in self._specs})

    async def versions(self, model_id: str) -> list[str]:
        return [v for m, v in self._specs if m == model_id]

    async def spec(self, model_id: str, version: str) -> VersionSpec | None:
        return self._specs.get((model_id, version))

    async def is_loaded(self, model_id: str, version: str) -> bool:
        return (model_id, version) in self._loaded

    async def load(self, model_id: str, version: str) -> None:
        self._cancel_retirement((model_id, version))
        await asyncio.to_thread(self.load_now, model_id, version)

    def load_now(self, model_id: str, version: str) -> LoadedModel:
        """Load on this thread (idempotent); raise UnknownVersion or LoadError."""
        key = (model_id, version)
        spec = self._specs.get(key)
        if spec is None:
            if not any(m == model_id for m, _ in self._specs):
                raise UnknownModel(UNKNOWN_SPEC.format(model_id=model_id, version=version))
            raise UnknownVersion(UNKNOWN_SPEC.format(model_id=model_id, version=version))
        self._cancel_retirement(key)
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # two callers loading the same version load it once
            if (model := self._loaded.get(key)) is not None:
                return model
            available = self._memory_available()
            if available < spec.memory_limit_bytes:
                raise LoadError(
                    NO_ROOM.format(
                        model_id=model_id,
                        version=version,
                        available=available / 2**20,
                        limit=spec.memory_limit_bytes / 2**20,
                    )
                )
            model = self._loader(spec)
            self._loaded[key] = model
            return model

    async def check_health(self, model_id: str, version: str) -> HealthCheckResult:
        spec = self._specs.get((model_id, version))
        if spec is None:
            reason = UNKNOWN_SPEC.format(model_id=model_id, version=version)
            return HealthCheckResult.failure(
                model_id=model_id, version=version, reason=reason, replica=self.replica
            )
        model = self._loaded.get((model_id, version))
        try:
            result = await asyncio.wait_for(
                asyncio.to_thread(self.check_health_now, spec, model),
                timeout=self._health_timeout,
            )
        except TimeoutError:
            result = HealthCheckResult.failure(
                model_id=model_id,
                version=version,
                reason=HEALTH_TIMEOUT.format(seconds=self._health_timeout),
                replica=self.replica,
                loaded=model is not None,
                memory_bytes=model.memory_bytes if model is not None else None,
                memory_limit_bytes=spec.memory_limit_bytes,
            )
        if model is not None and self._loaded.get((model_id, version)) is model:
            self._health[model_id, version] = result
        return result

    async def signature(self, model_id: str, version: str) -> Signature | None:
        model = self._loaded.get((model_id, version))
        return Signature(model.inputs, model.outputs) if model is not None else None

    async def keep_warm(self, model_id: str, version: str) -> bool:
        key = (model_id, version)
        with self._lock:  # against a retirement firing now (see _retire)
            timer = self._retirements.pop(key, None)
            health = self._health.get(key)
            warm = key in self._loaded and health is not None and health.healthy
            if timer is not None and not warm:
                self._retirements[key] = timer  # not kept: leave its unload as it was
                timer = None
        if timer is not None:
            timer.cancel()
        return warm

    def check_health_now(self, spec: VersionSpec, model: LoadedModel | None) -> HealthCheckResult:
        return health.probe(
            spec=spec,
            model=model,
            replica=self.replica,
            memory_available=self._memory_available(),
        )

    async def unload(self, model_id: str, version: str, *, after: float = 0.0) -> None:
        self.schedule_unload((model_id, version), after)

    def schedule_unload(self, key: Key, after: float) -> None:
        self._cancel_retirement(key)
        if after <= 0:
            self._retire(key)
            return
        timer = threading.Timer(after, lambda: self._retire(key, timer))
        timer.daemon = True
        with self._lock:
            self._retirements[key] = timer
        timer.start()

    def _retire(self, key: Key, timer: threading.Timer | None = None) -> None:
        with self._lock:
            # A retirement cancelled (a load, keep_warm) as it fired does not unload.
            if timer is not None and self._retirements.get(key) is not timer:
                return
            self._retirements.pop(key, None)
            busy = self.in_use(*key)
            if not busy:
                self._loaded.pop(key, None)
                self._health.pop(key, None)
        if busy:
            # Never cut off a request, never unload what serves: look again shortly.
            self.schedule_unload(key, RETIRE_RETRY_SECONDS)

    def _cancel_retirement(self, key: Key) -> None:
        with self._lock:
            timer = self._retirements.pop(key, None)
        if timer is not None:
            timer.cancel()

    def pending_unloads(self) -> list[Key]:
        return list(self._retirements)
