"""The threads predicts run on: every job answered, none held hostage by a hanging one."""

from __future__ import annotations

import asyncio
import threading

import pytest

from swaps import model_threads
from swaps.model_threads import ModelThreads

# A bound on how long a test may wait for an answer that should come at once: it
# fails the test instead of hanging it, it is never waited out by a passing test.
PATIENCE = 10


def square(n: int) -> int:
    if n < 0:
        raise ValueError(f"negative: {n}")
    return n * n


async def test_every_job_gets_its_own_answer_or_its_own_error():
    threads = ModelThreads(2)

    futures = [threads.run(square, n) for n in range(-3, 50)]
    outcomes = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), PATIENCE)

    for n, outcome in zip(range(-3, 50), outcomes, strict=True):
        if n < 0:
            assert isinstance(outcome, ValueError) and str(outcome) == f"negative: {n}"
        else:
            assert outcome == n * n


async def test_jobs_asked_after_a_hanging_one_are_answered_by_another_thread():
    threads = ModelThreads(2)
    gate = threading.Event()
    hanging = threads.run(lambda _: gate.wait() and "released", None)
    behind = [threads.run(square, n) for n in range(10)]  # asked right after it

    try:
        assert await asyncio.wait_for(asyncio.gather(*behind), PATIENCE) == [
            n * n for n in range(10)
        ]
        later = await asyncio.wait_for(threads.run(square, 7), PATIENCE)
        assert later == 49
        assert not hanging.done()
    finally:
        gate.set()
    assert await asyncio.wait_for(hanging, PATIENCE) == "released"


async def test_a_request_gone_away_leaves_the_others_answered():
    threads = ModelThreads(1)
    gate = threading.Event()
    first = threads.run(lambda _: gate.wait() and 1, None)
    cancelled = threads.run(square, 2)
    kept = threads.run(square, 3)
    cancelled.cancel()
    gate.set()

    assert await asyncio.wait_for(asyncio.gather(first, kept), PATIENCE) == [1, 9]


def test_a_pool_needs_a_thread():
    with pytest.raises(ValueError, match="at least one thread"):
        ModelThreads(0)


async def test_another_versions_requests_never_queue_behind_a_slow_one():
    threads = ModelThreads(3)
    gate = threading.Event()
    slow = threads.run(lambda _: gate.wait() and "slow", None, key="slow")
    await asyncio.sleep(0)  # one tick: the slow version's group is handed over
    try:
        behind = threads.run(square, 2, key="slow")  # joins the slow version's group
        other = threads.run(square, 3, key="quick")
        await asyncio.sleep(0)

        assert threads._open["quick"] is not threads._open["slow"]
        assert await asyncio.wait_for(other, PATIENCE) == 9
        # The loop no longer waits for the slow version's groups; it still does for others.
        assert threads._slow == {"slow"}
    finally:
        gate.set()
    assert await asyncio.wait_for(asyncio.gather(slow, behind), PATIENCE) == ["slow", 4]


async def test_the_answers_of_a_slow_version_wake_the_loop_without_a_watch(monkeypatch):
    monkeypatch.setattr(model_threads, "RESCUE_SECONDS", 3600)  # no watch comes to help
    threads = ModelThreads(2)
    gate = threading.Event()
    first = threads.run(lambda _: gate.wait() and "slow", None, key="v")
    await asyncio.sleep(0)  # handed over; the loop waited for it in vain: "v" is slow now
    assert threads._slow == {"v"}
    gate.set()

    assert await asyncio.wait_for(first, PATIENCE) == "slow"
    # A group the loop does not wait for: its thread must wake the loop with the answer.
    assert await asyncio.wait_for(threads.run(square, 6, key="v"), PATIENCE) == 36
