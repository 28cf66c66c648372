"""get_swap_status and concurrency: live state, and one operation per model at a time."""

from __future__ import annotations

import asyncio

import pytest

from swaps.engine.errors import SwapConflict, UnknownModel
from swaps.engine.results import SwapState

from .conftest import MODEL, held_request, wait_entered


async def test_status_is_idle_before_any_swap(stack):
    # A model served from before this process started: loaded and routed, no swap seen.
    await stack.versions.load(MODEL, "1")
    stack.router.apply(MODEL, "1", epoch=1)

    status = await stack.swapper.get_swap_status(MODEL)

    assert status.state is SwapState.IDLE
    assert status.current_version == "1"
    assert status.target_version is None


async def test_status_passes_through_swapping_draining_completed(
    stack, serving_version, transitions
):
    await stack.swapper.swap_version(MODEL, "1", "2")

    assert transitions.states == [SwapState.SWAPPING, SwapState.DRAINING, SwapState.COMPLETED]
    final = await stack.swapper.get_swap_status(MODEL)
    assert final.state is SwapState.COMPLETED
    assert (final.current_version, final.previous_version) == ("2", "1")
    assert final.end_time >= final.start_time


async def test_status_counts_pending_requests_while_draining(
    stack, serving_version, gate, transitions
):
    held_request(stack)
    held_request(stack)
    await wait_entered(2)
    swap = asyncio.create_task(stack.swapper.swap_version(MODEL, "1", "2"))
    await transitions.wait_for(SwapState.DRAINING)

    status = await stack.swapper.get_swap_status(MODEL)

    assert status.state is SwapState.DRAINING
    assert status.pending_requests == 2
    gate.set()
    await swap
    assert (await stack.swapper.get_swap_status(MODEL)).pending_requests == 0


async def test_drain_publishes_the_count_going_down(stack, serving_version, gate, transitions):
    held_request(stack)
    await wait_entered()
    swap = asyncio.create_task(stack.swapper.swap_version(MODEL, "1", "2"))
    await transitions.wait_for(SwapState.DRAINING)
    gate.set()
    await swap

    counts = [s.pending_requests for s in transitions.seen if s.state is SwapState.DRAINING]
    assert counts[0] == 1
    assert counts[-1] == 0


async def test_status_of_unknown_model_is_refused(stack):
    with pytest.raises(UnknownModel):
        await stack.swapper.get_swap_status("nope")


async def test_second_swap_while_one_runs_is_refused(stack, serving_version, gate, transitions):
    held_request(stack)
    await wait_entered()
    swap = asyncio.create_task(stack.swapper.swap_version(MODEL, "1", "2"))
    await transitions.wait_for(SwapState.DRAINING)

    with pytest.raises(SwapConflict, match="already running"):
        await stack.swapper.swap_version(MODEL, "2", "3")
    with pytest.raises(SwapConflict):
        await stack.swapper.rollback_version(MODEL, "1")
    gate.set()
    assert (await swap).success
    assert await stack.router.active(MODEL) == "2"


async def test_concurrent_swap_attempts_let_exactly_one_through(stack, serving_version):
    outcomes = await asyncio.gather(
        stack.swapper.swap_version(MODEL, "1", "2"),
        stack.swapper.swap_version(MODEL, "1", "3"),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, SwapConflict)]
    succeeded = [o for o in outcomes if not isinstance(o, BaseException) and o.success]
    assert len(refused) == 1 and len(succeeded) == 1
    assert await stack.router.active(MODEL) == succeeded[0].to_version


async def test_a_swap_can_follow_a_finished_one(stack, serving_version):
    await stack.swapper.swap_version(MODEL, "1", "2")

    result = await stack.swapper.swap_version(MODEL, "2", "3")

    assert result.success
