"""What a replica tells the fleet about itself, on every heartbeat and every change.

A replica writes its `ReplicaReport` to Redis with a time to live; while the key exists
the replica is live. The engine's fleet ports read nothing else about replicas: whether
a version is loaded and healthy everywhere, which route epoch each replica applied, and
how many requests are in flight on each version all come from these reports.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from .fleet_keys import FleetKeys, text
from .results import HealthCheckResult

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .seal import Seal

# model -> version -> value: JSON objects nest cleanly, so no key needs a separator.
PerVersion = dict[str, dict[str, Any]]
# While notifications keep coming, a wait still reads every report this often (in
# polling intervals), to drop replicas that died without a word.
REFRESH_ROUNDS = 10


@dataclass(frozen=True)
class ReplicaReport:
    replica_id: str
    address: str  # where clients reach it, e.g. "http://10.0.0.5:8001"
    pid: int
    started_at: datetime
    reported_at: datetime
    incarnation: str  # the fleet state it last synced (FleetKeys.incarnation)
    loaded: dict[str, list[str]] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)  # model -> version it routes to
    epochs: dict[str, int] = field(default_factory=dict)  # model -> route epoch applied
    # model -> a rollout's split of its route (router.Split.as_dict), where there is one
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    inflight: dict[str, dict[str, int]] = field(default_factory=dict)
    # Requests that finished: all of them (what a drain counts), and of those the ones
    # refused as a client's error (4xx) and the ones the model failed (5xx). Served is
    # what is left: a failed request is never counted as served.
    completed: dict[str, dict[str, int]] = field(default_factory=dict)
    client_errors: dict[str, dict[str, int]] = field(default_factory=dict)
    model_failures: dict[str, dict[str, int]] = field(default_factory=dict)
    served: dict[str, dict[str, int]] = field(default_factory=dict)
    # The finished requests' latency histograms, counts by bucket of
    # inflight.LATENCY_BUCKETS_MS, cumulative since the replica started (latency.window).
    # Empty in the reports of replicas older than it.
    latency: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    health: dict[str, dict[str, HealthCheckResult]] = field(default_factory=dict)
    # The load request (Fleet's desired set) each version's health or failure answers.
    answered: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    # The tensors each loaded version takes and gives (compatibility.Signature.as_dict).
    signatures: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def count(self, table: str, model_id: str, version: str) -> int:
        return getattr(self, table).get(model_id, {}).get(version, 0)

    def has_loaded(self, model_id: str, version: str) -> bool:
        return version in self.loaded.get(model_id, ())

    def health_of(self, model_id: str, version: str) -> HealthCheckResult | None:
        return self.health.get(model_id, {}).get(version)

    def to_json(self) -> bytes:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["started_at"] = self.started_at.isoformat()
        data["reported_at"] = self.reported_at.isoformat()
        data["health"] = {
            model_id: {version: result.as_dict() for version, result in by_version.items()}
            for model_id, by_version in self.health.items()
        }
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ReplicaReport:
        data = orjson.loads(raw)
        data["started_at"] = datetime.fromisoformat(data["started_at"])
        data["reported_at"] = datetime.fromisoformat(data["reported_at"])
        data["health"] = {
            model_id: {version: health_from_dict(h) for version, h in by_version.items()}
            for model_id, by_version in data.get("health", {}).items()
        }
        return cls(**data)


def health_from_dict(data: dict[str, Any]) -> HealthCheckResult:
    data = dict(data)
    data["checked_at"] = datetime.fromisoformat(data["checked_at"])
    if data.get("output_shape") is not None:
        data["output_shape"] = tuple(data["output_shape"])
    return HealthCheckResult(**data)


def nest(flat: dict[tuple[str, str], Any]) -> PerVersion:
    """{(model, version): value} -> {model: {version: value}}, as reports carry it."""
    nested: PerVersion = {}
    for (model_id, version), value in flat.items():
        nested.setdefault(model_id, {})[version] = value
    return nested


def sealed_report(seal: Seal, keys: FleetKeys, report: ReplicaReport) -> bytes:
    """The report as a replica stores it: sealed, for its own key only."""
    return seal.seal("report", keys.report(report.replica_id), report.to_json())


def opened_report(
    seal: Seal, keys: FleetKeys, replica_id: str, stored: bytes | None
) -> ReplicaReport | None:
    """The report stored under `replica_id`'s key, or None: none, or one not sealed with
    the fleet key (a forged report would count requests nobody served, or ack a flip)."""
    raw = seal.open("report", keys.report(replica_id), stored)
    return ReplicaReport.from_json(raw) if raw is not None else None


async def live_reports(redis: Redis, keys: FleetKeys, seal: Seal) -> list[ReplicaReport]:
    """Reports of the replicas whose heartbeat has not lapsed, in replica id order.

    A replica killed without a word stops counting once its report key expires; its id
    is dropped from the register here (it is added back by its next heartbeat, if any).
    """
    members = sorted(text(m) for m in await redis.smembers(keys.replicas))
    if not members:
        return []
    raws = await redis.mget([keys.report(m) for m in members])
    gone = [m for m, raw in zip(members, raws, strict=True) if raw is None]
    if gone:
        await redis.srem(keys.replicas, *gone)
    opened = (opened_report(seal, keys, m, raw) for m, raw in zip(members, raws, strict=True))
    return [report for report in opened if report is not None]


async def report_rounds(
    redis: Redis, keys: FleetKeys, seal: Seal, *, interval: float
) -> AsyncIterator[list[ReplicaReport]]:
    """The live reports now, then again each time a replica reports (or `interval` passes).

    Subscribed before the first read, so a report written in between is not missed: a
    wait for replicas (acks, loads, drains) sees their answer within a round trip.
    After a notification only the reports of the replicas that sent it are read again,
    so a wait costs one read per report written, not one read of the whole fleet per
    report (that grew with the square of the fleet's size). Every report is read again
    after `interval` without a notification and at least every `REFRESH_ROUNDS`
    intervals, which is how a replica whose report expired stops counting.
    Use it under `contextlib.aclosing`, so the subscription ends with the wait.
    """
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(keys.reported)
        reports = {r.replica_id: r for r in await live_reports(redis, keys, seal)}
        refreshed = time.monotonic()
        while True:
            yield [reports[replica_id] for replica_id in sorted(reports)]
            reporters = set()
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=interval)
            while message is not None:  # several replicas reported at once: one round
                reporters.add(text(message["data"]))
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
            if not reporters or time.monotonic() - refreshed >= REFRESH_ROUNDS * interval:
                reports = {r.replica_id: r for r in await live_reports(redis, keys, seal)}
                refreshed = time.monotonic()
                continue
            named = sorted(reporters)
            for replica_id, raw in zip(
                named, await redis.mget([keys.report(r) for r in named]), strict=True
            ):
                report = opened_report(seal, keys, replica_id, raw)
                if report is None:
                    reports.pop(replica_id, None)
                else:
                    reports[replica_id] = report
    finally:
        await pubsub.aclose()
