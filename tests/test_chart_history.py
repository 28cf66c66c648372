"""live.py's request-rate chart: a point per model once a beat, on the beat, kept in Redis
for five minutes, whichever console process (and however many) measured it.

The console's clock is injected; the replicas' reports are written to this test's own
Redis namespace as a replica writes them, stamped by that clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from swaps import broadcast, live
from swaps.engine.fleet import Fleet
from swaps.engine.reports import ReplicaReport, sealed_report
from swaps.fleet_reports import open_fleet

from .processes import free_port

STARTED = datetime(2025, 1, 1, tzinfo=UTC)
T0 = 1_000_000.0  # a whole second: beats fall on T0, T0 + 1, ...


class Clock:
    """The console's wall clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Replica:
    """One replica's report in Redis: its served totals of model `held`, as of `at`."""

    def __init__(self, fleet: Fleet, replica_id: str = "replica-a") -> None:
        self.fleet = fleet
        self.replica_id = replica_id

    async def report(self, *, at: float, served: dict[str, int], route: str = "1") -> None:
        report = ReplicaReport(
            replica_id=self.replica_id,
            address="http://replica",
            pid=1,
            started_at=STARTED,
            reported_at=datetime.fromtimestamp(at, UTC),
            incarnation="i",
            loaded={"held": sorted({*served, route})},
            routes={"held": route},
            served={"held": served},
        )
        stored = sealed_report(self.fleet.seal, self.fleet.keys, report)
        await self.fleet.redis.set(self.fleet.keys.report(self.replica_id), stored)
        await self.fleet.redis.sadd(self.fleet.keys.replicas, self.replica_id)


class Console:
    """One console process's publisher, its clock and what its sockets were sent."""

    def __init__(self, fleet: Fleet, start: float) -> None:
        self.fleet = fleet
        self.clock = Clock(start)
        self.publisher = live.Publisher(clock=self.clock)
        self.traffic, self.errors = live.Traffic(), live.errors_traffic()
        self.frames: list[str] = []

    async def push(self, text: str) -> None:
        self.frames.append(text)

    async def publish_at(self, now: float) -> None:
        self.clock.now = now
        broadcast.watchers.add("held", self.push)
        try:
            await self.publisher.publish_once(self.fleet, self.traffic, self.errors)
        finally:
            broadcast.watchers.discard("held", self.push)

    def points(self) -> list[dict]:
        return [json.loads(f) for f in self.frames if f.startswith("{")]

    def served_per_second(self) -> dict[str, float]:
        """The rates of the counts table last sent, by version."""
        (table, *_) = [f for f in reversed(self.frames) if 'id="pending-held"' in f]
        served = r'data-version="(\w+)">.*?class="served" data-rate="([\d.]+)"'
        rows = re.findall(served, table, re.S)
        return {version: float(rate) for version, rate in rows}


@pytest.fixture
async def fleet(control_plane) -> AsyncIterator[Fleet]:
    opened = open_fleet()
    yield opened
    await opened.redis.aclose()


@pytest.fixture
def replica(fleet) -> Replica:
    return Replica(fleet)


def stored(*, now: float) -> list[dict]:
    return live.stored_points(["held"], now=now)["held"]


async def steady(console: Console, replica: Replica, *, beats: range, rate: float = 4.0):
    """`rate` requests a second to version 1, reported every half second, and the
    console's beat just after each second of `beats` (from T0)."""
    for beat in beats:
        for half in (0.0, 0.5):
            at = T0 + beat + half
            await replica.report(at=at, served={"1": int(rate * (at - T0))})
            if half == 0.0:
                await console.publish_at(at + live.BEAT_SLACK)


async def test_chart_points_are_stored_once_a_beat_stamped_with_the_beat(fleet, replica):
    console = Console(fleet, T0)

    await steady(console, replica, beats=range(6))

    # The first reading has no rate, the second covers less than a beat (it started
    # when somebody began watching): the chart starts at the third.
    assert [p["t"] for p in stored(now=T0 + 6)] == [T0 + 2, T0 + 3, T0 + 4, T0 + 5]
    assert console.points() == [
        {"kind": "traffic", "model": "held", "t": p["t"], "rates": p["rates"]}
        for p in stored(now=T0 + 6)
    ]


async def test_an_out_of_beat_wake_adds_no_chart_point(fleet, replica):
    console = Console(fleet, T0)
    await steady(console, replica, beats=range(4))
    before, sent = stored(now=T0 + 4), len(console.points())

    # A state was just sent: the counts go out at once, between two beats, right after
    # the replica reported the flip.
    await replica.report(at=T0 + 3.6, served={"1": 16}, route="2")
    await console.publish_at(T0 + 3.62)

    assert stored(now=T0 + 4) == before
    assert len(console.points()) == sent
    # The table shows the flip at once, with the last beat's rates (not 4 requests over
    # the 0.62 s since that beat, nor 0 for a report not rewritten yet).
    assert console.served_per_second() == {"1": 4.0, "2": 0.0}


async def test_the_chart_reads_the_real_rate_through_wakes_and_uneven_heartbeats(fleet, replica):
    console = Console(fleet, T0)
    # 4 req/s throughout; the replica reports on uneven heartbeats and at once on each
    # change, and the console is woken right after each of those changes.
    reports = [0.0, 0.25, 0.75, 1.5, 1.75, 2.0, 2.25, 3.25, 3.5, 4.5, 5.0, 5.25, 6.25, 7.0]
    wakes = {1.75: 1.8, 2.0: 2.05, 2.25: 2.3, 5.0: 5.1}
    for beat_or_report in sorted({*reports, *range(8)}):
        at = T0 + beat_or_report
        if beat_or_report in reports:
            await replica.report(at=at, served={"1": int(4 * beat_or_report)})
        if beat_or_report == int(beat_or_report):
            await console.publish_at(at + live.BEAT_SLACK)
        if beat_or_report in wakes:
            await console.publish_at(T0 + wakes[beat_or_report])

    assert [p["rates"]["1"] for p in stored(now=T0 + 8)] == [4.0] * 6


async def test_the_version_a_swap_routes_to_reads_its_rate_at_the_first_beat_after(fleet, replica):
    console = Console(fleet, T0)
    await steady(console, replica, beats=range(4))

    # At T0 + 3.5 the route flipped to 2: 1 served 2 requests of the beat, 2 the other 2.
    await replica.report(at=T0 + 4, served={"1": 14, "2": 2}, route="2")
    await console.publish_at(T0 + 4 + live.BEAT_SLACK)

    assert stored(now=T0 + 5)[-1]["rates"] == {"1": 2.0, "2": 2.0}


async def test_the_history_is_bounded_to_five_minutes(fleet, replica):
    console = Console(fleet, T0)

    await steady(console, replica, beats=range(400))

    points = stored(now=T0 + 399.5)
    assert len(points) == live.CHART_POINTS == 300
    assert points[0]["t"] == T0 + 100  # 399 - 300 < t <= 399
    key = live.chart_key(fleet.namespace, "held")
    assert await fleet.redis.zcard(key) == 300
    assert 0 < await fleet.redis.ttl(key) <= live.CHART_WINDOW


async def test_the_history_survives_a_new_console_process(fleet, replica):
    first = Console(fleet, T0)
    await steady(first, replica, beats=range(5))
    kept = stored(now=T0 + 5)

    restarted = Console(fleet, T0 + 5)  # a new publisher: nothing in memory
    assert stored(now=T0 + 5) == kept
    await steady(restarted, replica, beats=range(5, 10))

    assert [p["t"] for p in stored(now=T0 + 10)] == [
        *(p["t"] for p in kept),
        *(T0 + beat for beat in range(7, 10)),
    ]


async def test_two_console_processes_store_one_point_per_beat_and_send_the_same(fleet, replica):
    one, other = Console(fleet, T0), Console(fleet, T0)
    for beat in range(6):
        at = T0 + beat
        await replica.report(at=at, served={"1": 4 * beat})
        await one.publish_at(at + live.BEAT_SLACK)
        # The other reads a moment later, when the replica had reported again.
        await replica.report(at=at + 0.005, served={"1": 4 * beat + 1})
        await other.publish_at(at + 0.01)

    points = stored(now=T0 + 6)
    assert [p["t"] for p in points] == [T0 + beat for beat in range(2, 6)]
    assert one.points() == other.points()


async def test_a_page_is_sent_the_stored_points_as_its_charts_history(fleet, replica):
    console = Console(fleet, T0)
    await steady(console, replica, beats=range(5))

    html = live.chart_history(["held"], now=T0 + 5)

    script = re.fullmatch(
        r'<script id="chart-history-held" type="application/json">(.*)</script>', html
    )
    assert script is not None, html
    history = json.loads(script.group(1))
    assert history == {"beat": 1.0, "window": 300, "points": stored(now=T0 + 5)}


async def test_points_older_than_five_minutes_are_not_sent_to_a_page(fleet, replica):
    console = Console(fleet, T0)
    await steady(console, replica, beats=range(5))

    assert live.stored_points(["held"], now=T0 + 4 + live.CHART_WINDOW) == {"held": []}


def test_a_page_is_sent_no_history_rather_than_an_error_when_redis_is_away(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    assert live.chart_history(["held"]) == ""
