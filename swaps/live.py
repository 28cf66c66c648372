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
  version drains) and sends each model's counts. It never runs per request: its cost
  is one Redis read per beat, whatever the traffic.
- The request-rate chart: once a second, on the second (the chart beat), the rates are
  measured and each model's point is stored in Redis (`ChartHistory`) and sent. Only
  then: a publish between two chart beats (woken by a change, or a draining quarter)
  shows the last beat's rates and charts nothing, as a rate over a few milliseconds is
  noise (0, then 7, then 0 req/s where the real rate was 4). The stored points are the
  last five minutes a page is sent when it (re)connects (`chart_history`).

It runs in the console (daphne) process, as asyncio tasks started by the first
websocket connection and stopped when the last one closes: daphne sends no lifespan
events, only the console has watchers to serve, and nobody watching costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils.html import json_script

from swaps import broadcast, notify
from swaps.engine.errors import SwapError
from swaps.engine.fleet import Fleet
from swaps.engine.fleet_keys import REDIS_DOWN
from swaps.engine.reports import ReplicaReport
from swaps.fleet_reports import open_fleet

log = logging.getLogger(__name__)

BEAT = 1.0
DRAINING_BEAT = 0.25
# Beats fall on the clock's whole beats, this much after (a timer that fires a hair
# early must still land in the new beat): every console process then reads the reports
# at the same moments, and their chart points of a beat are the same measurement.
BEAT_SLACK = 0.005
# The chart's span: one point per model and chart beat, the last CHART_WINDOW seconds.
CHART_WINDOW = 300
CHART_POINTS = int(CHART_WINDOW / BEAT)
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
class _Reading:
    """One replica's totals as last read, and the rates per version they gave."""

    totals: dict[tuple[str, str], int]
    reported_at: float  # by the replica's clock
    read_at: float  # by the console's
    rates: dict[tuple[str, str], float]


@dataclass
class Traffic:
    """Totals per replica of one or more report tables (served requests by default),
    remembered between readings to turn them into rates per version.

    Keyed by replica and start time: a restarted replica counts from zero again, and
    its first report must not read as a burst (or a negative rate). A version a known
    replica reports for the first time counts from zero: it had served nothing before
    (the version a swap just routed to, which otherwise read 0 req/s for a beat).

    A replica's rate is what it served between the two reports read, over the time
    between them by its own clock: a reading falls anywhere between two heartbeats, so
    by the console's clock a steady 4 req/s read as 2 to 6, by how many heartbeats a
    beat caught. A report not rewritten since the last reading tells nothing new: its
    last rate stands, and the next window starts from the report that told something.
    """

    tables: tuple[str, ...] = ("served",)
    latest: dict[str, dict[str, float]] = field(default_factory=dict)  # the last reading's
    beat: int | None = None  # the chart beat of the last reading (Publisher's), if any
    _first_beat: int | None = None
    _readings: dict[tuple[str, str], _Reading] = field(default_factory=dict)

    def rates(
        self, reports: list[ReplicaReport], at: float, *, beat: int | None = None
    ) -> dict[str, dict[str, float]]:
        rates: dict[str, dict[str, float]] = {}
        readings = {}
        for report in reports:
            key = (report.replica_id, report.started_at.isoformat())
            reading = readings[key] = self._read(
                self._readings.get(key), self._sum(report), report.reported_at.timestamp(), at
            )
            for (model, version), per_second in reading.rates.items():
                by_version = rates.setdefault(model, {})
                by_version[version] = by_version.get(version, 0.0) + per_second
        self._readings, self.latest = readings, rates
        if beat is not None:
            self._first_beat = beat if self._first_beat is None else self._first_beat
            self.beat = beat
        return rates

    @property
    def over_a_whole_beat(self) -> bool:
        """Whether the last reading's rates cover a whole chart beat: neither the first
        reading (no rate yet) nor the next one, whose window began off the beat (when
        somebody started watching) and may have caught no report at all."""
        return (
            self._first_beat is not None
            and self.beat is not None
            and (self.beat >= self._first_beat + 2)
        )

    @staticmethod
    def _read(
        before: _Reading | None, totals: dict[tuple[str, str], int], reported_at: float, at: float
    ) -> _Reading:
        if before is None:
            return _Reading(totals, reported_at, at, dict.fromkeys(totals, 0.0))
        if reported_at <= before.reported_at and totals == before.totals:
            return before
        # A report stamped no later than the last (its clock stepped back) is measured
        # by the console's readings instead.
        elapsed = reported_at - before.reported_at
        if elapsed <= 0:
            elapsed = at - before.read_at
        rates = {
            key: max(count - before.totals.get(key, 0), 0) / elapsed if elapsed > 0 else 0.0
            for key, count in totals.items()
        }
        return _Reading(totals, reported_at, at, rates)

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


# One chart beat's points, a model's chart per key (a sorted set of JSON points scored
# by their time). The first console process to store a beat's point wins, and every
# process sends the stored one: they all read the same reports at the same moment (the
# beats fall on the clock's seconds), so a second point would be the same measurement
# again, and two series a little apart merged by time would zigzag. Each chart keeps
# its last window, by time and by count, and expires a window after its last point (a
# model deleted, or a console nobody watches, leaves nothing behind).
STORE_POINTS = """
local stored = {}
for i, key in ipairs(KEYS) do
  local point = redis.call('ZRANGEBYSCORE', key, ARGV[1], ARGV[1])[1]
  if not point then
    point = ARGV[4 + i]
    redis.call('ZADD', key, ARGV[1], point)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[2])
    redis.call('ZREMRANGEBYRANK', key, 0, -1 - tonumber(ARGV[3]))
    redis.call('EXPIRE', key, ARGV[4])
  end
  stored[i] = point
end
return stored
"""


def chart_key(namespace: str, model: str) -> str:
    """Where a model's chart points are kept: `{namespace}:chart:{model}`, a sorted set."""
    return f"{namespace}:chart:{model}"


class ChartHistory:
    """The fleet's chart points in Redis, the last CHART_WINDOW seconds of each model's."""

    def __init__(self, fleet: Fleet) -> None:
        self._namespace = fleet.namespace
        self._store = fleet.redis.register_script(STORE_POINTS)

    async def store(
        self, at: float, rates: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, Any]]:
        """Store each model's point of the beat at `at`, unless one is stored already;
        the stored points, by model."""
        models = sorted(rates)
        if not models:
            return {}
        points = [orjson.dumps({"t": at, "rates": rates[model]}) for model in models]
        stored = await self._store(
            keys=[chart_key(self._namespace, model) for model in models],
            args=[at, at - CHART_WINDOW + BEAT, CHART_POINTS, CHART_WINDOW, *points],
        )
        return {model: orjson.loads(point) for model, point in zip(models, stored, strict=True)}


def stored_points(
    models: Iterable[str], *, now: float | None = None
) -> dict[str, list[dict[str, Any]]] | None:
    """The stored chart points of each of `models` of the last CHART_WINDOW seconds,
    oldest first; None if Redis cannot be read (logged). Synchronous: for renders."""
    names = list(models)
    if not names:
        return {}
    since = (time.time() if now is None else now) - CHART_WINDOW
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=2.0, socket_connect_timeout=2.0
    )
    try:
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zrangebyscore(chart_key(settings.HOTSWAP_NAMESPACE, name), f"({since}", "+inf")
            replies = pipe.execute()
    except REDIS_DOWN as exc:
        log.warning("console chart: cannot read the stored points (%s)", exc)
        return None
    finally:
        client.close()
    return {
        name: [orjson.loads(p) for p in points] for name, points in zip(names, replies, strict=True)
    }


def chart_history(models: Iterable[str], *, now: float | None = None) -> str:
    """Each model's stored chart points, as the element its page keeps them in
    (`chart-history-MODEL`, templates/swaps/chart.html), which console.js draws from.

    For the snapshot a page is sent when it connects and reconnects: its charts then
    start with the last five minutes, not empty, and a reconnected page fills the gap.
    "" if Redis cannot be read: the charts keep what they show.
    """
    stored = stored_points(models, now=now)
    if not stored:
        return ""
    return "".join(
        json_script(
            {"beat": BEAT, "window": CHART_WINDOW, "points": points}, f"chart-history-{name}"
        )
        for name, points in stored.items()
    )


class Publisher:
    """The per-process live task: follows the announced changes and beats the counts.

    Besides its beat, the counts are published at once (`wake`) when somebody starts
    watching and when a change's state was just sent: a version that stopped serving
    would otherwise still read "serving" for up to a beat. Such a publish shows the
    last chart beat's rates and adds no chart point (see the module's docstring).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.watchers = 0
        self._task: asyncio.Task | None = None
        self._woken: asyncio.Event | None = None
        self._clock = clock  # wall-clock seconds: beats fall on the same seconds everywhere

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
        """Read the reports and send each model's counts; the first time in a chart beat,
        measure the rates and store and send each model's chart point. Return the wait
        until the next beat."""
        reports = await fleet.replicas()
        now = self._clock()
        beat = math.floor(now / BEAT)
        on_beat = beat != traffic.beat
        if on_beat:
            traffic.rates(reports, now, beat=beat)
            errors.rates(reports, now, beat=beat)
        rows = pending_rows(reports, traffic.latest, errors.latest)
        for model, model_rows in rows.items():
            await broadcast.pending_counts(model, model_rows)
        await broadcast.replicas(reports)
        if on_beat and traffic.over_a_whole_beat:
            rates = {
                model: {row["version"]: round(row["rate"], 3) for row in model_rows}
                for model, model_rows in rows.items()
            }
            for model, point in (await ChartHistory(fleet).store(beat * BEAT, rates)).items():
                await broadcast.traffic(model, at=point["t"], rates=point["rates"])
        period = DRAINING_BEAT if draining(rows) else BEAT
        return period - self._clock() % period + BEAT_SLACK


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
