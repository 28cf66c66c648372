"""The engine's ports backed by Redis, for a fleet of replicas on any number of hosts.

`Fleet` holds one Redis client and hands the engine its four ports: `versions`
(fleet_versions.py), `router`, `inflight` and `board`. The engine never talks to a
replica: it writes what it wants (routes, the desired set of loaded versions) and reads
what the replicas report (`reports.py`). Redis going away inside any port surfaces as
`FleetUnavailable`, never as a hang: the client has socket timeouts and every wait has
a deadline.

The database is the source of truth for which version is active; Redis holds the fast
shared copy, and `republish` restores it after Redis restarted empty.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from .errors import FleetUnavailable
from .fleet_keys import (
    NO_LIVE_REPLICA,
    FleetKeys,
    parse_version_field,
    redis_client,
    text,
    unavailable_as_error,
    version_field,
)
from .fleet_versions import FleetVersions, Quarantine, desired_entry
from .hotswapper import ModelHotSwapper, Observer, SwapPolicy
from .reports import ReplicaReport, live_reports, report_rounds
from .results import SwapState, SwapStatus
from .router import Split, decode_route, describe_route, encode_route
from .seal import Seal
from .spec import VersionSpec

NO_ACK = (
    "replica {replica} did not apply route epoch {epoch} of model {model_id!r} within "
    "{seconds:g} s; the route was restored to {restored}"
)

BOARD_CONTESTED = (
    "the status board of model {model_id!r} kept changing under forged entries; nothing was started"
)
FLIP_RACED = (
    "the route of model {model_id!r} changed under {attempts} flips in a row; nothing was "
    "flipped by this one"
)

# The flip: the route, its epoch and its seal (made for that epoch), the history, and
# the change notification, as one step, if the epoch is still the one the seal was made
# after; else nothing, and the caller seals the next epoch and tries again. An empty
# route removes it (undoing a first deploy). The route's field is `router.encode_route`
# (the stable version and a rollout's split, sealed together); the history lists
# stable versions only (ARGV[7]).
FLIP = """
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held ~= tonumber(ARGV[4]) then
  return {-1, tostring(held)}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
local previous = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
  if redis.call('LINDEX', KEYS[3], -1) ~= ARGV[7] then
    redis.call('RPUSH', KEYS[3], ARGV[7])
  end
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return {tonumber(ARGV[5]), previous}
"""
# Flips of one model are one operation's, so a lost race is rare; this bounds retries.
FLIP_ATTEMPTS = 10

# Claim a model for an operation unless one is running: read and write as one step.
# The board's entries are sealed (`<64 hex digits>.<json>`); Lua cannot check a seal, so
# it reads past it, and the caller checks the seal of whatever this returns. An entry
# that does not even parse is no running operation.
BEGIN = """
local current = redis.call('GET', KEYS[1])
if current then
  local parsed, decoded = pcall(cjson.decode, string.sub(current, 66))
  if parsed and type(decoded) == 'table' then
    local state = decoded['state']
    if state == 'swapping' or state == 'draining' then
      return current
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return false
"""
# Take the board over from a forged entry, only if it is still that entry.
REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
CLAIM_ATTEMPTS = 5


class FleetRouter:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._redis = fleet.redis
        self._keys = fleet.keys
        self._flip = fleet.redis.register_script(FLIP)

    @unavailable_as_error
    async def active(self, model_id: str) -> str | None:
        value = await self._redis.hget(self._keys.routes, model_id)
        return decode_route(text(value))[0] if value is not None else None

    @unavailable_as_error
    async def split(self, model_id: str) -> Split | None:
        value = await self._redis.hget(self._keys.routes, model_id)
        return decode_route(text(value))[1] if value is not None else None

    @unavailable_as_error
    async def epoch(self, model_id: str) -> int:
        return int(await self._redis.hget(self._keys.epochs, model_id) or 0)

    @unavailable_as_error
    async def history(self, model_id: str) -> list[str]:
        return [text(v) for v in await self._redis.lrange(self._keys.history(model_id), 0, -1)]

    @unavailable_as_error
    async def flip(self, model_id: str, version: str, split: Split | None = None) -> int:
        """Flip the route, then wait until every live replica has applied the new epoch.

        A replica that is still heartbeating yet does not apply it within the ack
        timeout gets the previous route back (a new flip) and the flip fails, naming it.
        """
        reports = await live_reports(self._redis, self._keys, self._fleet.seal)
        if not reports:
            raise FleetUnavailable(NO_LIVE_REPLICA)
        started = time.monotonic()
        epoch, previous = await self._set(model_id, encode_route(version, split), reports)
        lagging = await self._await_acks(model_id, epoch, started)
        if lagging is None:
            return epoch
        await self._set(
            model_id, previous, await live_reports(self._redis, self._keys, self._fleet.seal)
        )
        raise FleetUnavailable(
            NO_ACK.format(
                replica=lagging,
                epoch=epoch,
                model_id=model_id,
                seconds=self._fleet.ack_timeout,
                restored=describe_route(previous) if previous else "no version",
            )
        )

    async def _set(
        self, model_id: str, route: str, reports: list[ReplicaReport]
    ) -> tuple[int, str]:
        """Write the route's field (`encode_route`) at the next epoch; return it and the
        field it replaced."""
        # Past the highest epoch a replica reports too, in case Redis lost the counter.
        floor = max((r.epochs.get(model_id, 0) for r in reports), default=0)
        held = await self.epoch(model_id)
        for _ in range(FLIP_ATTEMPTS):
            epoch = max(held, floor) + 1
            flipped, previous = await self._flip(
                keys=[
                    self._keys.routes,
                    self._keys.epochs,
                    self._keys.history(model_id),
                    self._keys.route_seals,
                ],
                args=[
                    model_id,
                    route,
                    self._keys.changes,
                    held,
                    epoch,
                    self._fleet.seal.route_seal(model_id, route, epoch),
                    decode_route(route)[0],
                ],
            )
            if int(flipped) == epoch:
                return epoch, text(previous)
            held = int(previous)  # another flip came first: seal the epoch after it
        raise FleetUnavailable(FLIP_RACED.format(model_id=model_id, attempts=FLIP_ATTEMPTS))

    async def _await_acks(self, model_id: str, epoch: int, started: float) -> str | None:
        """None once every live replica applied `epoch`; else the id of one that did not.

        The wait lasts at least one heartbeat TTL, so a replica that died just before
        the flip expires (and stops counting) before anyone is blamed.
        """
        timeout = max(self._fleet.ack_timeout, self._fleet.heartbeat_ttl)
        async with aclosing(self._fleet.report_rounds()) as rounds:
            async for reports in rounds:
                lagging = [r.replica_id for r in reports if r.epochs.get(model_id, 0) < epoch]
                if not lagging:
                    return None
                if time.monotonic() - started >= timeout:
                    return lagging[0]
        raise AssertionError("report rounds never end")


class FleetInflight:
    """In-flight and completed counts summed over the live replicas' reports."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    async def pending(self, model_id: str, version: str) -> int:
        return await self._sum("inflight", model_id, version)

    async def completed(self, model_id: str, version: str) -> int:
        return await self._sum("completed", model_id, version)

    @unavailable_as_error
    async def wait_drained(self, model_id: str, version: str, timeout: float) -> int:
        # Replicas report every ~50 ms while a version they no longer route to has
        # requests in flight, so a drain is seen to finish promptly.
        deadline = time.monotonic() + max(timeout, 0.0)
        async with aclosing(self._fleet.report_rounds()) as rounds:
            async for reports in rounds:
                remaining = sum(r.count("inflight", model_id, version) for r in reports)
                if remaining == 0 or time.monotonic() >= deadline:
                    return remaining
        raise AssertionError("report rounds never end")

    @unavailable_as_error
    async def _sum(self, table: str, model_id: str, version: str) -> int:
        reports = await live_reports(self._fleet.redis, self._fleet.keys, self._fleet.seal)
        return sum(r.count(table, model_id, version) for r in reports)


class FleetBoard:
    def __init__(self, fleet: Fleet) -> None:
        self._redis = fleet.redis
        self._keys = fleet.keys
        self._seal = fleet.seal
        self._begin = fleet.redis.register_script(BEGIN)
        self._replace = fleet.redis.register_script(REPLACE)

    @unavailable_as_error
    async def begin(self, status: SwapStatus) -> SwapStatus | None:
        key, claim = self._keys.status(status.model_id), self._sealed(status)
        for _ in range(CLAIM_ATTEMPTS):
            running = await self._begin(keys=[key], args=[claim])
            if not running:
                return None
            opened = self._seal.open("status", key, running)
            if opened is not None:
                return status_from_json(opened)
            # A forged "running" entry (logged by the seal) claims nothing: take the
            # board over, unless a real claim replaced it meanwhile (then look again).
            if await self._replace(keys=[key], args=[claim, running]):
                return None
        raise FleetUnavailable(BOARD_CONTESTED.format(model_id=status.model_id))

    @unavailable_as_error
    async def put(self, status: SwapStatus) -> None:
        await self._redis.set(self._keys.status(status.model_id), self._sealed(status))

    @unavailable_as_error
    async def get(self, model_id: str) -> SwapStatus | None:
        key = self._keys.status(model_id)
        raw = self._seal.open("status", key, await self._redis.get(key))
        return status_from_json(raw) if raw is not None else None

    def _sealed(self, status: SwapStatus) -> bytes:
        key = self._keys.status(status.model_id)
        return self._seal.seal("status", key, orjson.dumps(status.as_dict()))


def sealed_spec(seal: Seal, spec: VersionSpec) -> bytes:
    field = version_field(spec.model_id, spec.version)
    return seal.seal("spec", field, orjson.dumps(spec.as_dict()))


def status_from_json(raw: bytes | str) -> SwapStatus:
    data: dict[str, Any] = orjson.loads(raw)
    data["state"] = SwapState(data["state"])
    for name in ("start_time", "end_time"):
        if data.get(name):
            data[name] = datetime.fromisoformat(data[name])
    # A field a newer release added is left out, so processes of two releases can share
    # a board while an upgrade rolls through.
    return SwapStatus(**{name: value for name, value in data.items() if name in _STATUS_FIELDS})


_STATUS_FIELDS = frozenset(field.name for field in dataclasses.fields(SwapStatus))


class Fleet:
    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        seal: Seal,
        heartbeat_ttl: float = 3.0,
        ack_timeout: float = 10.0,
        load_timeout: float = 120.0,
        poll_interval: float = 0.02,
    ) -> None:
        self.redis = redis
        self.keys = FleetKeys(namespace)
        self.namespace = namespace
        self.seal = seal
        self.heartbeat_ttl = heartbeat_ttl
        self.ack_timeout = ack_timeout
        self.load_timeout = load_timeout
        self.poll_interval = poll_interval
        self.versions = FleetVersions(self)
        self.router = FleetRouter(self)
        self.inflight = FleetInflight(self)
        self.board = FleetBoard(self)

    @classmethod
    def from_url(cls, url: str, *, namespace: str, socket_timeout: float = 5.0, **options) -> Fleet:
        """A fleet on its own client whose every Redis call gives up after `socket_timeout`."""
        return cls(redis_client(url, timeout=socket_timeout), namespace=namespace, **options)

    def report_rounds(self) -> AsyncIterator[list[ReplicaReport]]:
        """Live reports now and after every replica report (see reports.report_rounds)."""
        return report_rounds(self.redis, self.keys, self.seal, interval=self.poll_interval)

    def swapper(
        self, *, policy: SwapPolicy | None = None, on_change: Observer | None = None
    ) -> ModelHotSwapper:
        return ModelHotSwapper.over(self, policy=policy, on_change=on_change)

    @unavailable_as_error
    async def publish_spec(self, spec: VersionSpec) -> None:
        """Register a version with the fleet (replicas learn of it on their next sync)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.specs,
                version_field(spec.model_id, spec.version),
                sealed_spec(self.seal, spec),
            )
            pipe.set(self.keys.incarnation, secrets.token_hex(8), nx=True)
            pipe.publish(self.keys.changes, spec.model_id)
            await pipe.execute()

    @unavailable_as_error
    async def replicas(self) -> list[ReplicaReport]:
        """The latest report of every live replica."""
        return await live_reports(self.redis, self.keys, self.seal)

    @unavailable_as_error
    async def is_empty(self) -> bool:
        """Whether Redis has lost (or never had) this fleet's state: republish it then."""
        return not await self.redis.exists(self.keys.incarnation)

    async def quarantined(self) -> dict[tuple[str, str], Quarantine]:
        return await self.versions.quarantined()

    async def set_quarantine(
        self, model_id: str, version: str, quarantine: Quarantine | None
    ) -> None:
        await self.versions.set_quarantine(model_id, version, quarantine)

    @unavailable_as_error
    async def republish(
        self,
        *,
        specs: Iterable[VersionSpec],
        routes: dict[str, tuple[str, list[str]]],
        settled: Iterable[str] = (),
        quarantined: Mapping[tuple[str, str], Quarantine] | None = None,
    ) -> None:
        """Restore specs, routes (active version, history), the desired set, quarantines.

        Each route's epoch goes past both what Redis still holds and the highest epoch
        any live replica applied, so replicas accept it as newer than what they serve.
        For the `settled` models (no operation under way) the desired set is made to
        match: a version asked for and never retired that does not serve is retired now
        (one a failed operation left behind would otherwise load on every new replica).
        Quarantines the database holds are written; ones only Redis holds stay, for the
        control plane to record.
        """
        reports = await live_reports(self.redis, self.keys, self.seal)
        epochs = await self.redis.hgetall(self.keys.epochs)
        held = {text(model_id): int(epoch) for model_id, epoch in epochs.items()}
        desired = self.seal.open_all("desired", await self.redis.hgetall(self.keys.desired))
        first_request = await self.redis.incrby(self.keys.load_requests, len(routes) or 1)
        settled = set(settled)
        serving = {(model_id, active) for model_id, (active, _) in routes.items()}
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            for spec in specs:
                pipe.hset(
                    self.keys.specs,
                    version_field(spec.model_id, spec.version),
                    sealed_spec(self.seal, spec),
                )
            for field, raw in desired.items():
                key = parse_version_field(field)
                wanted = orjson.loads(raw)
                if key[0] in settled and key not in serving and wanted["retire_at"] is None:
                    pipe.hset(
                        self.keys.desired,
                        field,
                        desired_entry(self.seal, field, request=wanted["request"], retire_at=now),
                    )
            for (model_id, version), quarantine in (quarantined or {}).items():
                field = version_field(model_id, version)
                pipe.hset(self.keys.quarantine, field, quarantine.sealed(self.seal, field))
            for offset, (model_id, (active, history)) in enumerate(sorted(routes.items())):
                floor = max([held.get(model_id, 0), *(r.epochs.get(model_id, 0) for r in reports)])
                served = [v for i, v in enumerate(history) if i == 0 or history[i - 1] != v]
                if not served or served[-1] != active:
                    served.append(active)
                pipe.hset(self.keys.routes, model_id, active)
                pipe.hset(self.keys.epochs, model_id, floor + 1)
                pipe.hset(
                    self.keys.route_seals,
                    model_id,
                    self.seal.route_seal(model_id, active, floor + 1),
                )
                pipe.delete(self.keys.history(model_id))
                pipe.rpush(self.keys.history(model_id), *served)
                field = version_field(model_id, active)
                pipe.hset(
                    self.keys.desired,
                    field,
                    desired_entry(self.seal, field, request=first_request - offset, retire_at=None),
                )
            pipe.set(self.keys.incarnation, secrets.token_hex(8))
            pipe.publish(self.keys.changes, "*")
            await pipe.execute()
