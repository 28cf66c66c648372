"""The fleet's version manager: which versions exist, and the set every replica loads.

Loading is a request, not a command: `load` adds the version to the desired set with a
fresh request number, and every replica loads it, runs its health check and reports
which request it answered. `load` returns once every live replica answered; a replica
that could not load it fails the load, named in the error. Unloading marks the version
with a retire-at time; replicas unload it after that time once nothing runs on it and
it is not routed, and a later `load` clears the mark.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from . import errors
from .compatibility import Signature
from .errors import FleetUnavailable, LoadError, UnknownModel, UnknownVersion
from .fleet_keys import NO_LIVE_REPLICA, parse_version_field, unavailable_as_error, version_field
from .reports import ReplicaReport, live_reports
from .results import HealthCheckResult
from .seal import Seal
from .spec import VersionSpec

if TYPE_CHECKING:
    from .fleet import Fleet

REPLICA_LOAD_FAILED = "replica {replica} could not load it: {reason}"
LOAD_TIMED_OUT = (
    "replica {replica} did not load version {version!r} of model {model_id!r} within {seconds:g} s"
)
NOT_LOADED_ON = "not loaded on replica {replica}"
NO_REPLICA_TO_CHECK = "no live replica has it loaded: no live replica at all"
QUARANTINED = (
    "version {version!r} of model {model_id!r} is quarantined ({reason}): no replica loads "
    "it until someone clears the quarantine"
)
# A version whose unload is nearer than this is not kept warm but loaded again: a
# replica may unload it before the cancellation reaches it (or by a clock a little ahead).
WARM_MARGIN = 10.0


def desired_entry(seal: Seal, field: bytes, *, request: int, retire_at: float | None) -> bytes:
    """A desired-set entry as stored: sealed, for `field` (`version_field`) only."""
    return seal.seal("desired", field, orjson.dumps({"request": request, "retire_at": retire_at}))


@dataclass(frozen=True)
class Quarantine:
    """Why no replica loads a version: its trial crashed, hung or broke its limit."""

    reason: str
    replica: str
    at: float

    def to_json(self) -> bytes:
        return orjson.dumps({"reason": self.reason, "replica": self.replica, "at": self.at})

    def sealed(self, seal: Seal, field: bytes) -> bytes:
        return seal.seal("quarantine", field, self.to_json())

    @classmethod
    def from_json(cls, raw: bytes | str) -> Quarantine:
        data = orjson.loads(raw)
        return cls(reason=str(data["reason"]), replica=str(data["replica"]), at=float(data["at"]))


class FleetVersions:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._redis = fleet.redis
        self._keys = fleet.keys
        self._seal = fleet.seal

    @unavailable_as_error
    async def models(self) -> list[str]:
        return sorted({model_id for model_id, _ in await self._fields()})

    @unavailable_as_error
    async def versions(self, model_id: str) -> list[str]:
        return [version for m, version in await self._fields() if m == model_id]

    @unavailable_as_error
    async def spec(self, model_id: str, version: str) -> VersionSpec | None:
        field = version_field(model_id, version)
        raw = self._seal.open("spec", field, await self._redis.hget(self._keys.specs, field))
        return VersionSpec.from_dict(orjson.loads(raw)) if raw is not None else None

    @unavailable_as_error
    async def is_loaded(self, model_id: str, version: str) -> bool:
        reports = await live_reports(self._redis, self._keys, self._fleet.seal)
        return bool(reports) and all(r.has_loaded(model_id, version) for r in reports)

    @unavailable_as_error
    async def load(self, model_id: str, version: str) -> None:
        """Have every live replica load the version and check its health."""
        if await self.spec(model_id, version) is None:
            await self._refuse_unknown(model_id, version)
        field = version_field(model_id, version)
        raw = self._seal.open(
            "quarantine", field, await self._redis.hget(self._keys.quarantine, field)
        )
        if raw is not None:
            reason = Quarantine.from_json(raw).reason
            raise LoadError(QUARANTINED.format(model_id=model_id, version=version, reason=reason))
        if not await live_reports(self._redis, self._keys, self._fleet.seal):
            raise FleetUnavailable(NO_LIVE_REPLICA)
        request = await self._redis.incr(self._keys.load_requests)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._keys.desired,
                field,
                desired_entry(self._seal, field, request=request, retire_at=None),
            )
            pipe.publish(self._keys.changes, model_id)
            await pipe.execute()
        await self._await_answers(model_id, version, request)

    @unavailable_as_error
    async def check_health(self, model_id: str, version: str) -> HealthCheckResult:
        """The worst of the live replicas' latest checks: unhealthy first, then slowest."""
        reports = await live_reports(self._redis, self._keys, self._fleet.seal)
        if not reports:
            return HealthCheckResult.failure(
                model_id=model_id, version=version, reason=NO_REPLICA_TO_CHECK, replica=""
            )
        results = [
            _health_on(report, model_id, version)
            for report in reports
            if _got_to(report, model_id, version)
        ] or [_health_on(reports[0], model_id, version)]
        return min(results, key=lambda h: (h.healthy, -(h.latency_ms or 0.0)))

    @unavailable_as_error
    async def signature(self, model_id: str, version: str) -> Signature | None:
        described = {
            orjson.dumps(r.signatures.get(model_id, {}).get(version))
            for r in await live_reports(self._redis, self._keys, self._fleet.seal)
            if r.has_loaded(model_id, version)
        }
        if len(described) != 1:
            return None
        (raw,) = described
        data = orjson.loads(raw)
        return Signature.from_dict(data) if data is not None else None

    @unavailable_as_error
    async def keep_warm(self, model_id: str, version: str) -> bool:
        field = version_field(model_id, version)
        reports = await live_reports(self._redis, self._keys, self._fleet.seal)
        raw = self._seal.open("desired", field, await self._redis.hget(self._keys.desired, field))
        if not reports or raw is None:
            return False
        wanted = orjson.loads(raw)
        retire_at = wanted["retire_at"]
        if retire_at is not None and retire_at - time.time() < WARM_MARGIN:
            return False
        if not all(_warm_on(r, model_id, version, wanted["request"]) for r in reports):
            return False
        # The same request number: no replica loads or checks it again for this.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._keys.desired,
                field,
                desired_entry(self._seal, field, request=wanted["request"], retire_at=None),
            )
            pipe.publish(self._keys.changes, model_id)
            await pipe.execute()
        return True

    @unavailable_as_error
    async def unload(self, model_id: str, version: str, *, after: float = 0.0) -> None:
        field = version_field(model_id, version)
        raw = self._seal.open("desired", field, await self._redis.hget(self._keys.desired, field))
        request = orjson.loads(raw)["request"] if raw is not None else 0
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._keys.desired,
                field,
                desired_entry(
                    self._seal, field, request=request, retire_at=time.time() + max(after, 0.0)
                ),
            )
            pipe.publish(self._keys.changes, model_id)
            await pipe.execute()

    @unavailable_as_error
    async def quarantined(self) -> dict[tuple[str, str], Quarantine]:
        """Every quarantined version, with why and where."""
        entries = self._seal.open_all(
            "quarantine", await self._redis.hgetall(self._keys.quarantine)
        )
        return {parse_version_field(f): Quarantine.from_json(raw) for f, raw in entries.items()}

    @unavailable_as_error
    async def set_quarantine(
        self, model_id: str, version: str, quarantine: Quarantine | None
    ) -> None:
        """Quarantine a version (a database record, republished), or clear it (None)."""
        field = version_field(model_id, version)
        async with self._redis.pipeline(transaction=True) as pipe:
            if quarantine is None:
                pipe.hdel(self._keys.quarantine, field)
            else:
                pipe.hset(self._keys.quarantine, field, quarantine.sealed(self._seal, field))
            pipe.publish(self._keys.changes, model_id)
            await pipe.execute()

    async def _await_answers(self, model_id: str, version: str, request: int) -> None:
        started = time.monotonic()
        async with aclosing(self._fleet.report_rounds()) as rounds:
            async for reports in rounds:
                if not reports:
                    raise FleetUnavailable(NO_LIVE_REPLICA)
                waiting = [
                    r.replica_id for r in reports if not _answered(r, model_id, version, request)
                ]
                if not waiting:
                    return
                if time.monotonic() - started >= self._fleet.load_timeout:
                    raise LoadError(
                        LOAD_TIMED_OUT.format(
                            replica=waiting[0],
                            version=version,
                            model_id=model_id,
                            seconds=self._fleet.load_timeout,
                        )
                    )

    async def _fields(self) -> list[tuple[str, str]]:
        specs = self._seal.open_all("spec", await self._redis.hgetall(self._keys.specs))
        return [parse_version_field(f) for f in specs]

    async def _refuse_unknown(self, model_id: str, version: str) -> None:
        if model_id not in await self.models():
            raise UnknownModel(errors.UNKNOWN_MODEL.format(model_id=model_id))
        raise UnknownVersion(errors.UNKNOWN_VERSION.format(model_id=model_id, version=version))


def _answered(report: ReplicaReport, model_id: str, version: str, request: int) -> bool:
    """Whether the replica answered load `request`; raise LoadError if it failed it."""
    if report.answered.get(model_id, {}).get(version, -1) < request:
        return False
    reason = report.failures.get(model_id, {}).get(version)
    if reason:
        raise LoadError(REPLICA_LOAD_FAILED.format(replica=report.replica_id, reason=reason))
    return True


def _got_to(report: ReplicaReport, model_id: str, version: str) -> bool:
    """Whether the replica loaded the version or answered a load of it.

    One that has done neither joined the fleet (or started again) after the load was
    asked; it loads every desired version on its own and cannot serve one it has not
    loaded, so it does not judge the version yet. Counting it failed a swap ("not
    loaded on replica-2", or tensors "described differently") whenever a restarted
    replica reported in between the load and the checks.
    """
    return report.has_loaded(model_id, version) or version in report.answered.get(model_id, {})


def _warm_on(report: ReplicaReport, model_id: str, version: str, request: int) -> bool:
    """Loaded on the replica, and healthy by the check that answered the load `request`."""
    health = report.health_of(model_id, version)
    return (
        report.has_loaded(model_id, version)
        and report.answered.get(model_id, {}).get(version, -1) >= request
        and not report.failures.get(model_id, {}).get(version)
        and health is not None
        and health.healthy
    )


def _health_on(report: ReplicaReport, model_id: str, version: str) -> HealthCheckResult:
    health = report.health_of(model_id, version)
    if health is not None and report.has_loaded(model_id, version):
        return health
    return HealthCheckResult.failure(
        model_id=model_id,
        version=version,
        reason=NOT_LOADED_ON.format(replica=report.replica_id),
        replica=report.replica_id,
    )
