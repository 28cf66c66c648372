"""Live counts for the console: requests in flight and served per second, per version.

The replicas already report their in-flight and served counts to Redis on every
heartbeat and every change (swaps/engine/reports.py). The publisher reads those
reports on a steady beat (every second, every quarter second while a version
drains) and broadcasts each model's counts and a chart point. It never runs per
request: its cost is one Redis read per beat, whatever the traffic.

It runs in the console (daphne) process, as an asyncio task started by the first
websocket connection and stopped when the last one closes: daphne sends no lifespan
events, only the console has watchers to serve, and nobody watching costs nothing.
With several console processes, a short Redis claim per beat lets one of them send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from swaps import broadcast
from swaps.engine.errors import SwapError
from swaps.engine.fleet import Fleet
from swaps.engine.fleet_keys import REDIS_DOWN
from swaps.engine.reports import ReplicaReport
from swaps.fleet_reports import open_fleet

log = logging.getLogger(__name__)

BEAT = 1.0
DRAINING_BEAT = 0.25


@dataclass
class Traffic:
    """Served totals per replica, remembered between beats to turn them into rates.

    Keyed by replica and start time: a restarted replica counts from zero again, and
    its first report must not read as a burst (or a negative rate).
    """

    _totals: dict[tuple[str, str], dict[str, dict[str, int]]] = field(default_factory=dict)
    _at: float | None = None

    def rates(self, reports: list[ReplicaReport], at: float) -> dict[str, dict[str, float]]:
        rates: dict[str, dict[str, float]] = {}
        elapsed = at - self._at if self._at is not None else 0.0
        totals = {}
        for report in reports:
            key = (report.replica_id, report.started_at.isoformat())
            totals[key] = report.served
            before = self._totals.get(key, {})
            for model, versions in report.served.items():
                for version, served in versions.items():
                    grown = served - before.get(model, {}).get(version, served)
                    per_second = max(grown, 0) / elapsed if elapsed > 0 else 0.0
                    by_version = rates.setdefault(model, {})
                    by_version[version] = by_version.get(version, 0.0) + per_second
        self._totals, self._at = totals, at
        return rates


def pending_rows(
    reports: list[ReplicaReport], rates: dict[str, dict[str, float]]
) -> dict[str, list[dict[str, Any]]]:
    """model -> one row per version a live replica loaded or counts requests on."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for report in reports:
        versions = {(m, v) for m, vs in report.loaded.items() for v in vs}
        versions |= {(m, v) for m, vs in report.inflight.items() for v in vs}
        for model, version in versions:
            row = rows.setdefault(model, {}).setdefault(
                version, {"version": version, "inflight": 0, "serving": False}
            )
            row["inflight"] += report.count("inflight", model, version)
            row["serving"] |= report.routes.get(model) == version
    return {
        model: [
            {**row, "rate": rates.get(model, {}).get(version, 0.0)}
            for version, row in sorted(by_version.items())
        ]
        for model, by_version in sorted(rows.items())
    }


def draining(rows: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether a version no longer served still has requests in flight somewhere."""
    return any(r["inflight"] and not r["serving"] for by_model in rows.values() for r in by_model)


class Publisher:
    """The per-process task that broadcasts counts while anybody watches.

    Besides its beat, it is woken (`wake`) when a swap changes state or somebody starts
    watching: the counts then follow the state at once instead of up to a beat later
    (a version that just stopped serving would otherwise still read "serving").
    """

    def __init__(self) -> None:
        self.watchers = 0
        self._task: asyncio.Task | None = None
        self._woken: asyncio.Event | None = None

    def subscribe(self) -> None:
        self.watchers += 1
        loop = asyncio.get_running_loop()
        # A task left on another (closed) loop, as tests leave them, is no publisher.
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._woken = asyncio.Event()
            self._task = loop.create_task(self._run(self._woken))
        else:
            self.wake()

    def unsubscribe(self) -> None:
        self.watchers = max(self.watchers - 1, 0)
        if self.watchers == 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    def wake(self) -> None:
        """Publish now rather than at the next beat (from the publisher's own loop)."""
        if self._woken is not None and self._task is not None:
            self._woken.set()

    async def _run(self, woken: asyncio.Event) -> None:
        fleet = open_fleet()
        traffic = Traffic()
        try:
            # Also stop on our own: a cancel that lands inside a Redis call can be
            # swallowed by the client, and this loop must never outlive its watchers.
            was_woken = False
            while self._task is asyncio.current_task():
                beat = BEAT
                try:
                    beat = await self.publish_once(fleet, traffic, woken=was_woken)
                except (SwapError, *REDIS_DOWN) as exc:  # Redis away: say so, try again next beat
                    log.warning("console counts: cannot read the fleet (%s)", exc)
                try:
                    await asyncio.wait_for(woken.wait(), beat)
                    was_woken = True
                except TimeoutError:
                    was_woken = False
                woken.clear()
        finally:
            with contextlib.suppress(Exception):
                await fleet.redis.aclose()

    async def publish_once(self, fleet: Fleet, traffic: Traffic, *, woken: bool = False) -> float:
        """Read the reports, send each model's counts; return the wait until the next beat.

        On its beat, one console process sends (a short Redis claim decides which);
        when woken by a change, every woken process sends: the same fragment twice is
        harmless, a change shown late is not.
        """
        reports = await fleet.replicas()
        now = time.time()
        rows = pending_rows(reports, traffic.rates(reports, now))
        beat = DRAINING_BEAT if draining(rows) else BEAT
        # The other processes' reads just keep their rates fresh.
        claim = f"{fleet.namespace}:console:beat"
        if not woken and not await fleet.redis.set(claim, 1, nx=True, px=int(beat * 900)):
            return beat
        for model, model_rows in rows.items():
            await broadcast.pending_counts(model, model_rows)
            rates = {row["version"]: round(row["rate"], 3) for row in model_rows}
            await broadcast.traffic(model, at=now, rates=rates)
        return beat


publisher = Publisher()
