"""live.py: the counts the publisher reads from replica reports, the rates it derives, and
when it publishes them."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from channels.layers import get_channel_layer

from swaps import live, notify
from swaps.engine.reports import ReplicaReport
from swaps.live import Traffic, draining, pending_rows

STARTED = datetime(2025, 1, 1, tzinfo=UTC)


def report(
    replica: str = "a", *, started=STARTED, routes=None, inflight=None, served=None, errors=None
):
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
        client_errors=errors or {},
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


def test_requests_that_ended_in_errors_are_a_rate_of_their_own_not_served():
    served, errors = Traffic(), live.errors_traffic()
    before = report(served={"iris": {"2": 100}}, errors={"iris": {"2": 10}})
    served.rates([before], at=10.0), errors.rates([before], at=10.0)

    after = report(served={"iris": {"2": 100}}, errors={"iris": {"2": 30}})
    rows = pending_rows([after], served.rates([after], at=12.0), errors.rates([after], at=12.0))

    (row,) = [r for r in rows["iris"] if r["version"] == "2"]
    assert (row["rate"], row["error_rate"]) == (0.0, 10.0)


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
    Each publication puts a token on `publisher.published`."""
    publisher = live.Publisher()
    publisher.published = asyncio.Queue()

    async def publish_once(fleet, traffic, errors) -> float:
        publisher.published.put_nowait("published")
        return 3600.0

    monkeypatch.setattr(publisher, "publish_once", publish_once)
    yield publisher
    publisher.watchers = 1
    publisher.unsubscribe()  # on this test's loop, while it still runs


async def next_publication(publisher) -> str:
    return await asyncio.wait_for(publisher.published.get(), timeout=30)


async def test_the_publisher_publishes_as_soon_as_somebody_watches(publisher):
    publisher.subscribe()

    assert await next_publication(publisher)


async def test_a_woken_publisher_publishes_before_its_beat(publisher):
    publisher.subscribe()
    await next_publication(publisher)

    publisher.wake()

    assert await next_publication(publisher)


async def test_a_new_watcher_wakes_the_running_publisher(publisher):
    publisher.subscribe()
    await next_publication(publisher)

    publisher.subscribe()

    assert await next_publication(publisher)


class Renders:
    """broadcast.render_states or render_rest, replaced: each render's Changes on a
    queue; a render waits for `release` while `hold` is set (a render that takes long)."""

    def __init__(self) -> None:
        self.seen: asyncio.Queue = asyncio.Queue()
        self.hold = False
        self.release = asyncio.Event()

    async def __call__(self, changes, **options) -> None:
        self.seen.put_nowait(changes)
        if self.hold:
            await self.release.wait()

    async def next(self):
        return await asyncio.wait_for(self.seen.get(), timeout=30)


@dataclass
class Rendered:
    states: Renders
    rest: Renders


@pytest.fixture
async def follower(monkeypatch):
    """A change follower on this test's loop, rendering into `Renders`."""
    rendered = Rendered(states=Renders(), rest=Renders())
    monkeypatch.setattr(live.broadcast, "render_states", rendered.states)
    monkeypatch.setattr(live.broadcast, "render_rest", rendered.rest)
    following = live.ChangeFollower(states_sent=lambda: None)
    task = asyncio.create_task(following.run())
    await until_joined(following)
    yield rendered
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def until_joined(following) -> None:
    layer = get_channel_layer()
    async with asyncio.timeout(30):
        while not following._channel or following._channel not in layer.groups.get(
            notify.CHANGES, {}
        ):
            await asyncio.sleep(0)  # yield to the follower's tasks, no wall-clock wait


async def announce(model: str, kind: str = "swap") -> None:
    event = {"type": notify.EVENT, "record": "swap", "id": 1, "model": model, "kind": kind}
    await get_channel_layer().group_send(notify.CHANGES, event)


async def test_an_announced_change_is_rendered(follower):
    await announce("iris")

    changes = await follower.states.next()

    assert set(changes.swaps) == {"iris"} and not changes.everything
    assert set((await follower.rest.next()).swaps) == {"iris"}


async def test_changes_announced_during_a_render_are_merged_into_the_next_one(follower):
    states = follower.states
    states.hold = True
    await announce("iris")
    first = await states.next()
    for model in ("iris", "wine", "wine"):
        await announce(model)
    await asyncio.sleep(0)  # let the receiver take them (no wall-clock wait)

    states.hold = False
    states.release.set()
    second = await states.next()

    assert set(first.swaps) == {"iris"}
    assert set(second.swaps) == {"iris", "wine"}
    assert len(second.swaps["wine"]) == 2  # both, in order: each state is shown
    assert states.seen.empty()


async def test_the_rest_of_a_burst_is_rendered_once_after_its_states(follower):
    for model in ("iris", "wine", "iris"):
        await announce(model)

    rest = await follower.rest.next()

    assert set(rest.swaps) == {"iris", "wine"} and len(rest.swaps["iris"]) == 2
    assert follower.rest.seen.empty()


async def test_a_change_announced_while_this_process_flips_a_route_renders_after_the_flip(
    follower, monkeypatch
):
    # A rollback's request flips the route on a thread of this process: rendering its
    # transitions meanwhile would take the CPU from it and delay its answer.
    monkeypatch.setattr(live, "FLIP_HOLD", 30.0)
    flipping = threading.Event()
    flip_over = threading.Event()

    def flip() -> None:
        with notify.flips.flipping():
            flipping.set()
            flip_over.wait(30)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        assert await asyncio.to_thread(flipping.wait, 30)
        await announce("iris")
        await until_received()
        assert follower.states.seen.empty()
    finally:
        flip_over.set()
        flipper.join(30)

    assert set((await follower.states.next()).swaps) == {"iris"}


async def test_renders_wait_a_moment_after_a_flip_while_its_answer_is_written(monkeypatch):
    # The flip's view has returned; Django and daphne still write its API answer on
    # this process's loop, and a render started then delayed it by up to 15 ms.
    monkeypatch.setattr(notify, "ANSWER_GRACE", 0.2)
    with notify.flips.flipping():
        pass
    ended = time.monotonic()

    await notify.flips.over(timeout=30)

    assert time.monotonic() - ended >= 0.2


async def test_a_flip_that_lasts_holds_the_renders_only_for_a_moment(follower, monkeypatch):
    monkeypatch.setattr(live, "FLIP_HOLD", 0.01)
    with notify.flips.flipping():  # never ends while the render is awaited
        await announce("iris")

        assert set((await follower.states.next()).swaps) == {"iris"}


async def until_received() -> None:
    """Until the follower took every announcement off the channel layer."""
    layer = get_channel_layer()
    members = layer.groups.get(notify.CHANGES, {})
    async with asyncio.timeout(30):
        while any(q.qsize() for name, q in layer.channels.items() if name in members):
            await asyncio.sleep(0)  # yield to the follower's tasks, no wall-clock wait


async def test_once_the_channel_layer_is_back_every_watched_page_is_rendered_in_full(
    monkeypatch,
):
    renders = Renders()
    monkeypatch.setattr(live.broadcast, "render_states", renders)
    monkeypatch.setattr(live.broadcast, "render_rest", Renders())
    layer = get_channel_layer()
    receive = layer.receive
    failures = iter([ConnectionError("Redis went away")])

    async def receive_after_an_outage(channel):
        for failure in failures:
            raise failure
        return await receive(channel)

    monkeypatch.setattr(layer, "receive", receive_after_an_outage)
    monkeypatch.setattr(live, "RETRY_SECONDS", 0)
    task = asyncio.create_task(live.ChangeFollower(states_sent=lambda: None).run())
    try:
        changes = await renders.next()
    finally:
        task.cancel()

    assert changes.everything
