"""live.py: the counts the publisher reads from replica reports, the rates it derives, and
when it publishes them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from swaps import live
from swaps.engine.reports import ReplicaReport
from swaps.live import Traffic, draining, pending_rows

STARTED = datetime(2025, 1, 1, tzinfo=UTC)


def report(replica: str = "a", *, started=STARTED, routes=None, inflight=None, served=None):
    return ReplicaReport(
        replica_id=replica,
        address="http://x",
        pid=1,
        started_at=started,
        reported_at=started,
        incarnation="i",
        loaded={"iris": ["1", "2"]},
        routes=routes or {"iris": "2"},
        inflight=inflight or {},
        served=served or {},
    )


def test_in_flight_counts_are_summed_over_replicas():
    reports = [report("a", inflight={"iris": {"1": 2}}), report("b", inflight={"iris": {"1": 3}})]

    rows = pending_rows(reports, {})

    assert [r["inflight"] for r in rows["iris"]] == [5, 0]


def test_the_routed_version_is_marked_serving():
    rows = pending_rows([report()], {})

    assert [(r["version"], r["serving"]) for r in rows["iris"]] == [("1", False), ("2", True)]


def test_requests_in_flight_on_a_version_no_longer_served_is_draining():
    assert draining(pending_rows([report(inflight={"iris": {"1": 1}})], {}))


def test_requests_in_flight_on_the_served_version_is_not_draining():
    assert not draining(pending_rows([report(inflight={"iris": {"2": 4}})], {}))


def test_the_first_reading_has_no_rate_yet():
    assert Traffic().rates([report(served={"iris": {"2": 100}})], at=10.0) == {"iris": {"2": 0.0}}


def test_the_rate_is_requests_served_since_the_last_reading_per_second():
    traffic = Traffic()
    traffic.rates([report(served={"iris": {"2": 100}})], at=10.0)

    rates = traffic.rates([report(served={"iris": {"2": 130}})], at=12.0)

    assert rates == {"iris": {"2": 15.0}}


def test_a_restarted_replica_does_not_read_as_negative_traffic():
    traffic = Traffic()
    traffic.rates([report(served={"iris": {"2": 100}})], at=10.0)

    restarted = report(started=STARTED + timedelta(hours=1), served={"iris": {"2": 3}})
    rates = traffic.rates([restarted], at=11.0)

    assert rates == {"iris": {"2": 0.0}}


@pytest.fixture
async def publisher(monkeypatch, control_plane):
    """A publisher whose beat never comes: what it publishes, it publishes when woken.
    Each publication puts whether it was woken on `publisher.published`."""
    publisher = live.Publisher()
    publisher.published = asyncio.Queue()

    async def publish_once(fleet, traffic, *, woken=False) -> float:
        publisher.published.put_nowait(woken)
        return 3600.0

    monkeypatch.setattr(publisher, "publish_once", publish_once)
    yield publisher
    publisher.watchers = 1
    publisher.unsubscribe()  # on this test's loop, while it still runs


async def next_publication(publisher) -> bool:
    return await asyncio.wait_for(publisher.published.get(), timeout=30)


async def test_the_publisher_publishes_as_soon_as_somebody_watches(publisher):
    publisher.subscribe()

    assert await next_publication(publisher) is False


async def test_a_woken_publisher_publishes_before_its_beat(publisher):
    publisher.subscribe()
    await next_publication(publisher)

    publisher.wake()

    assert await next_publication(publisher) is True


async def test_a_new_watcher_wakes_the_running_publisher(publisher):
    publisher.subscribe()
    await next_publication(publisher)

    publisher.subscribe()

    assert await next_publication(publisher) is True
