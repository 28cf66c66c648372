"""The console's live task: the pushed fragments and counts, per console process.

Two things reach the browser live, and this task sends both to the sockets of its
process (swaps/broadcast.py keeps them):

- Changes. The process that made a change announces it (swaps/notify.py) to the
  channel layer's CHANGES group, which this task joins. Announcements arriving while
  it renders are merged into the next render: a burst of transitions costs one render
  per watched page, and the request or job that made them renders nothing.
- Counts: requests in flight and served per second, per version. The replicas report
  them to Redis on every heartbeat and every change (swaps/engine/reports.py); this
  task reads the reports on a steady beat (every second, every quarter second while a
  version drains) and sends each model's counts and a chart point. It never runs per
  request: its cost is one Redis read per beat, whatever the traffic.

It runs in the console (daphne) process, as asyncio tasks started by the first
websocket connection and stopped when the last one closes: daphne sends no lifespan
events, only the console has watchers to serve, and nobody watching costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer

from swaps import broadcast, notify
from swaps.engine.errors import SwapError
from swaps.engine.fleet import Fleet
from swaps.engine.fleet_keys import REDIS_DOWN
from swaps.engine.reports import ReplicaReport
from swaps.fleet_reports import open_fleet

log = logging.getLogger(__name__)

BEAT = 1.0
DRAINING_BEAT = 0.25
# The channel layer drops group members after a day (channels-redis' group_expiry).
REJOIN_SECONDS = 3600.0
RETRY_SECONDS = 1.0
# The rest of the pages render once no change arrived for REST_QUIET seconds, and at the
# latest REST_WAIT seconds after the burst's first change.
REST_QUIET = 0.05
REST_WAIT = 0.25
# Renders wait for a route flip running in this process, at most this long (notify.Flips).
FLIP_HOLD = 0.25


@dataclass
class Traffic:
    """Totals per replica of one or more report tables (served requests by default),
    remembered between beats to turn them into rates per version.

    Keyed by replica and start time: a restarted replica counts from zero again, and
    its first report must not read as a burst (or a negative rate).
    """

    tables: tuple[str, ...] = ("served",)
    _totals: dict[tuple[str, str], dict[tuple[str, str], int]] = field(default_factory=dict)
    _at: float | None = None

    def rates(self, reports: list[ReplicaReport], at: float) -> dict[str, dict[str, float]]:
        rates: dict[str, dict[str, float]] = {}
        elapsed = at - self._at if self._at is not None else 0.0
        totals = {}
        for report in reports:
            key = (report.replica_id, report.started_at.isoformat())
            now = totals[key] = self._sum(report)
            before = self._totals.get(key, {})
            for (model, version), count in now.items():
                grown = count - before.get((model, version), count)
                per_second = max(grown, 0) / elapsed if elapsed > 0 else 0.0
                by_version = rates.setdefault(model, {})
                by_version[version] = by_version.get(version, 0.0) + per_second
        self._totals, self._at = totals, at
        return rates

    def _sum(self, report: ReplicaReport) -> dict[tuple[str, str], int]:
        summed: dict[tuple[str, str], int] = {}
        for table in self.tables:
            for model, versions in getattr(report, table).items():
                for version, count in versions.items():
                    summed[model, version] = summed.get((model, version), 0) + count
        return summed


def errors_traffic() -> Traffic:
    """Requests that ended in an error, the client's (4xx) or the model's (5xx)."""
    return Traffic(tables=("client_errors", "model_failures"))


def pending_rows(
    reports: list[ReplicaReport],
    rates: dict[str, dict[str, float]],
    error_rates: dict[str, dict[str, float]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """model -> one row per version a live replica loaded or counts requests on: in
    flight, its role, requests served per second and requests failed per second."""
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
    error_rates = error_rates or {}
    return {
        model: [
            {
                **row,
                "rate": rates.get(model, {}).get(version, 0.0),
                "error_rate": error_rates.get(model, {}).get(version, 0.0),
            }
            for version, row in sorted(by_version.items())
        ]
        for model, by_version in sorted(rows.items())
    }


def draining(rows: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether a version no longer served still has requests in flight somewhere."""
    return any(r["inflight"] and not r["serving"] for by_model in rows.values() for r in by_model)


class Publisher:
    """The per-process live task: follows the announced changes and beats the counts.

    Besides its beat, the counts are published at once (`wake`) when somebody starts
    watching and when a change's state was just sent: a version that stopped serving
    would otherwise still read "serving" for up to a beat.
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
        """Publish the counts now rather than at the next beat (from the task's own loop)."""
        if self._woken is not None and self._task is not None:
            self._woken.set()

    async def _run(self, woken: asyncio.Event) -> None:
        follower = asyncio.create_task(ChangeFollower(states_sent=self.wake).run())
        fleet = open_fleet()
        traffic, errors = Traffic(), errors_traffic()
        try:
            # Also stop on our own: a cancel that lands inside a Redis call can be
            # swallowed by the client, and this loop must never outlive its watchers.
            while self._task is asyncio.current_task():
                beat = BEAT
                await notify.flips.over(FLIP_HOLD)
                try:
                    beat = await self.publish_once(fleet, traffic, errors)
                except (SwapError, *REDIS_DOWN) as exc:  # Redis away: say so, try again next beat
                    log.warning("console counts: cannot read the fleet (%s)", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), beat)
                woken.clear()
        finally:
            follower.cancel()
            with contextlib.suppress(BaseException):
                await follower
            with contextlib.suppress(Exception):
                await fleet.redis.aclose()

    async def publish_once(self, fleet: Fleet, traffic: Traffic, errors: Traffic) -> float:
        """Read the reports, send each model's counts; return the wait until the next beat."""
        reports = await fleet.replicas()
        now = time.time()
        rows = pending_rows(reports, traffic.rates(reports, now), errors.rates(reports, now))
        for model, model_rows in rows.items():
            await broadcast.pending_counts(model, model_rows)
            rates = {row["version"]: round(row["rate"], 3) for row in model_rows}
            await broadcast.traffic(model, at=now, rates=rates)
        return DRAINING_BEAT if draining(rows) else BEAT


class ChangeFollower:
    """Receives the announced changes and renders them, a burst at a time.

    One task receives (the channel layer keeps what arrives while nobody reads). One
    renders the states at once: announcements that arrive during a render are merged
    into the next one. One renders the rest of the pages (histories, audit logs,
    panels: most of the rendering) once the burst is over, REST_QUIET after its last
    announcement and at most REST_WAIT after its first: a rollback's few transitions
    cost one such render, which does not compete with the rollback for this host's CPU
    while it flips (the console usually runs in the process that serves the API).
    Another keeps this process's channel in the CHANGES group: the channel layer
    forgets members after a day, and a Redis that restarted forgot them all; when the
    group is joined again after Redis was away, every watched page is rendered in full,
    as announcements may have been missed meanwhile.
    """

    def __init__(self, *, states_sent: Callable[[], None]) -> None:
        self._states_sent = states_sent
        self._changes = broadcast.Changes()
        self._arrived = asyncio.Event()
        self._rest = broadcast.Changes()  # rendered once the burst is over
        self._rest_due = asyncio.Event()
        self._lost = asyncio.Event()  # Redis went away: join the group again at once
        self._layer = get_channel_layer()
        self._channel = ""

    async def run(self) -> None:
        self._channel = await self._layer.new_channel()
        steps = (self._join, self._receive, self._render_rest)
        tasks = [asyncio.create_task(step()) for step in steps]
        try:
            await self._render()
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await self._layer.group_discard(notify.CHANGES, self._channel)

    async def _join(self) -> None:
        rejoined = False
        while True:
            try:
                await self._layer.group_add(notify.CHANGES, self._channel)
            except Exception as exc:  # Redis away: the receiver says so; try again shortly
                log.debug("console changes: cannot join (%s)", exc)
                rejoined = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if rejoined:
                self._changes.everything = True
                self._arrived.set()
            rejoined = False
            self._lost.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), REJOIN_SECONDS)
            rejoined = self._lost.is_set()

    async def _receive(self) -> None:
        away = False
        while True:
            try:
                event = await self._layer.receive(self._channel)
            except Exception as exc:  # Redis away: keep trying; pages are redrawn after
                if not away:
                    log.warning("console changes: cannot receive (%s); retrying", exc)
                away = True
                self._lost.set()
                await asyncio.sleep(RETRY_SECONDS)
                continue
            away = False
            self._changes.add(event)
            self._arrived.set()

    async def _render(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            await notify.flips.over(FLIP_HOLD)
            changes, self._changes = self._changes, broadcast.Changes()
            if not changes:
                continue
            try:
                await broadcast.render_states(changes, states_sent=self._states_sent)
            except Exception:  # never lose the task: the next change renders again
                log.exception("console changes: could not render the states of %s", changes)
            self._rest.merge(changes)
            self._rest_due.set()

    async def _render_rest(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._rest_due.wait()
            first = loop.time()
            while True:  # until the burst is over, or has gone on long enough
                self._rest_due.clear()
                left = min(REST_QUIET, first + REST_WAIT - loop.time())
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._rest_due.wait(), left)
                except TimeoutError:
                    break
            await notify.flips.over(FLIP_HOLD)
            changes, self._rest = self._rest, broadcast.Changes()
            if not changes:
                continue
            try:
                await broadcast.render_rest(changes)
            except Exception:  # never lose the task: the next change renders again
                log.exception("console changes: could not render %s", changes)


publisher = Publisher()
