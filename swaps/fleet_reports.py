"""The replicas' reports as the console reads them: straight from Redis, never per request.

Each live replica keeps a report in Redis (swaps/engine/reports.py): what it loaded, its
routes, its counts and its last health check of each version. The console's publisher
(live.py) reads them on its beat; the model page's versions table reads them when it is
rendered or pushed.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from django.conf import settings

from swaps.engine.errors import SwapError
from swaps.engine.fleet import Fleet
from swaps.engine.fleet_keys import REDIS_DOWN
from swaps.engine.reports import ReplicaReport
from swaps.engine.results import HealthCheckResult
from swaps.engine.seal import Seal

log = logging.getLogger(__name__)


def open_fleet() -> Fleet:
    return Fleet.from_url(
        settings.REDIS_URL,
        namespace=settings.HOTSWAP_NAMESPACE,
        seal=Seal(settings.HOTSWAP_FLEET_KEYS),
        heartbeat_ttl=settings.HOTSWAP_HEARTBEAT_TTL,
        socket_timeout=2.0,
    )


def live_reports(*, wanted_for: str) -> list[ReplicaReport] | None:
    """The live replicas' reports; None if the fleet cannot be read (logged, naming what
    they were `wanted_for`: the caller says so instead of failing)."""

    async def read() -> list[ReplicaReport]:
        fleet = open_fleet()
        try:
            return await fleet.replicas()
        finally:
            await fleet.redis.aclose()

    try:
        return async_to_sync(read)()
    except (SwapError, *REDIS_DOWN) as exc:
        log.warning("cannot read the fleet's reports for %s (%s)", wanted_for, exc)
        return None


Checks = list[tuple[HealthCheckResult, bool]]


def health_by_version(model: str) -> dict[str, Checks] | None:
    """The last health check of each version of `model` on each live replica, passed or
    failed (a failure to load included), and whether the replica has it loaded now.

    None if the fleet cannot be read (the page says so instead of failing).
    """
    reports = live_reports(wanted_for="the console's health checks")
    if reports is None:
        return None
    health: dict[str, Checks] = {}
    for report in reports:
        for version, result in report.health.get(model, {}).items():
            health.setdefault(version, []).append((result, report.has_loaded(model, version)))
    return health


def health_of(versions: set[tuple[str, str]]) -> dict[tuple[str, str], Checks] | None:
    """`health_by_version` for these (model, version) pairs, in one read of the fleet."""
    if not versions:
        return {}
    reports = live_reports(wanted_for="the console's health checks")
    if reports is None:
        return None
    health: dict[tuple[str, str], Checks] = {}
    for report in reports:
        for model, version in sorted(versions):
            result = report.health.get(model, {}).get(version)
            if result is not None:
                loaded = report.has_loaded(model, version)
                health.setdefault((model, version), []).append((result, loaded))
    return health
