"""swap_version: the seed's swap cases, with the route flipped before the drain."""

from __future__ import annotations

import asyncio

import pytest

from swaps.engine import errors
from swaps.engine.errors import InvalidSwap, UnhealthyVersion, UnknownModel, UnknownVersion
from swaps.engine.results import SwapState

from .conftest import MODEL, held_request, infer, wait_entered


async def test_swap_with_healthy_target_succeeds(stack, serving_version):
    result = await stack.swapper.swap_version(MODEL, "1", "2")

    assert result.success
    assert (result.from_version, result.to_version) == ("1", "2")
    assert result.start_time <= result.end_time
    assert result.start_time.tzinfo is not None


async def test_swap_updates_routing(stack, serving_version):
    await stack.swapper.swap_version(MODEL, "1", "2")

    assert await stack.router.active(MODEL) == "2"
    assert infer(stack).version == "2"


async def test_swap_refuses_unhealthy_target_and_leaves_routing(stack, serving_version):
    with pytest.raises(UnhealthyVersion) as refused:
        await stack.swapper.swap_version(MODEL, "1", "broken")

    assert "shape" in refused.value.health.reason
    assert await stack.router.active(MODEL) == "1"
    assert infer(stack).version == "1"
    assert not await stack.versions.is_loaded(MODEL, "broken")


async def test_swap_refuses_target_whose_artifact_fails_to_load(stack, serving_version):
    with pytest.raises(UnhealthyVersion) as refused:
        await stack.swapper.swap_version(MODEL, "1", "corrupt")

    assert "weights are corrupt" in refused.value.message
    assert await stack.router.active(MODEL) == "1"


async def test_failed_health_check_shows_failed_status(stack, serving_version, transitions):
    with pytest.raises(UnhealthyVersion):
        await stack.swapper.swap_version(MODEL, "1", "broken")

    status = await stack.swapper.get_swap_status(MODEL)
    assert status.state is SwapState.FAILED
    assert "failed its health check" in status.message
    assert status.current_version == "1"


async def test_swap_with_unloaded_target_loads_it(stack, serving_version):
    assert not await stack.versions.is_loaded(MODEL, "2")

    await stack.swapper.swap_version(MODEL, "1", "2")

    assert await stack.versions.is_loaded(MODEL, "2")


async def test_swap_drains_requests_in_flight_on_the_old_version(
    stack, serving_version, gate, transitions
):
    running = held_request(stack)
    await wait_entered()
    swap = asyncio.create_task(stack.swapper.swap_version(MODEL, "1", "2"))
    await transitions.wait_for(SwapState.DRAINING)

    gate.set()
    result = await swap

    assert (await running).version == "1"
    assert result.requests_drained == 1
    assert result.requests_remaining == 0


async def test_route_flips_before_the_drain_finishes(stack, serving_version, gate, transitions):
    held_request(stack)
    await wait_entered()
    swap = asyncio.create_task(stack.swapper.swap_version(MODEL, "1", "2"))

    await transitions.wait_for(SwapState.DRAINING)

    assert infer(stack).version == "2"
    assert await stack.inflight.pending(MODEL, "1") == 1
    gate.set()
    await swap


async def test_drain_timeout_reports_remaining_and_never_cuts_off(stack, serving_version, gate):
    running = held_request(stack)
    await wait_entered()

    result = await stack.swapper.swap_version(MODEL, "1", "2", drain_timeout=0.05)

    assert result.success
    assert result.requests_remaining == 1
    assert "timed out" in result.message
    assert await stack.versions.is_loaded(MODEL, "1")
    gate.set()
    finished = await running
    assert finished.version == "1"
    assert finished.outputs["output-0"].tolist() == [[-2.0, 2.0]]


async def test_old_version_unloads_after_keep_warm(stack, serving_version):
    stack.swapper.policy = type(stack.swapper.policy)(keep_warm=0, drain_timeout=1)

    await stack.swapper.swap_version(MODEL, "1", "2")

    assert not await stack.versions.is_loaded(MODEL, "1")


async def test_old_version_stays_warm_within_keep_warm(stack, serving_version):
    await stack.swapper.swap_version(MODEL, "1", "2")

    assert await stack.versions.is_loaded(MODEL, "1")


async def test_swap_to_same_version_is_refused(stack, serving_version):
    with pytest.raises(InvalidSwap, match="already the source"):
        await stack.swapper.swap_version(MODEL, "1", "1")


async def test_swap_from_a_version_that_is_not_active_is_refused(stack, serving_version):
    with pytest.raises(InvalidSwap) as refused:
        await stack.swapper.swap_version(MODEL, "2", "3")

    assert refused.value.message == errors.NOT_ACTIVE.format(
        model_id=MODEL, version="2", active="1"
    )
    assert await stack.router.active(MODEL) == "1"


async def test_swap_from_unknown_version_is_refused(stack, serving_version):
    with pytest.raises(UnknownVersion, match="'9'"):
        await stack.swapper.swap_version(MODEL, "9", "2")


async def test_swap_to_unknown_version_is_refused(stack, serving_version):
    with pytest.raises(UnknownVersion, match="'9'"):
        await stack.swapper.swap_version(MODEL, "1", "9")


async def test_swap_of_unknown_model_is_refused(stack):
    with pytest.raises(UnknownModel):
        await stack.swapper.swap_version("nope", "1", "2")


async def test_refused_swap_leaves_status_as_it_was(stack, serving_version):
    before = await stack.swapper.get_swap_status(MODEL)

    with pytest.raises(InvalidSwap):
        await stack.swapper.swap_version(MODEL, "2", "3")

    assert await stack.swapper.get_swap_status(MODEL) == before
