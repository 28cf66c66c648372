"""resume: finishing an operation whose runner stopped, and the rollback split in two."""

from __future__ import annotations

from dataclasses import replace

from swaps.engine.results import SwapState

from .conftest import MODEL, held_request, infer, wait_entered


async def test_rollback_without_waiting_returns_once_the_route_flipped(
    stack, serving_version, gate
):
    await stack.swapper.swap_version(MODEL, "1", "2")
    held_request(stack)
    await wait_entered()

    result = await stack.swapper.rollback_version(MODEL, "1", wait_for_drain=False)

    assert result.success and result.requests_remaining == 1
    assert infer(stack).version == "1"
    assert (await stack.swapper.get_swap_status(MODEL)).state is SwapState.DRAINING
    gate.set()


async def test_resume_completes_a_rollback_left_draining(stack, serving_version, gate):
    await stack.swapper.swap_version(MODEL, "1", "2")
    held = held_request(stack)
    await wait_entered()
    await stack.swapper.rollback_version(MODEL, "1", wait_for_drain=False)
    gate.set()
    await held

    status = await stack.swapper.resume(MODEL)

    assert status.state is SwapState.COMPLETED
    assert "1 request drained" in status.message
    assert status.pending_requests == 0


async def test_resume_fails_an_operation_interrupted_before_the_flip(stack, serving_version):
    running = replace(
        await stack.board.get(MODEL),
        state=SwapState.SWAPPING,
        operation="swap",
        previous_version="1",
        current_version="1",
        target_version="2",
    )
    await stack.board.put(running)  # as a worker that died mid-health-check left it

    status = await stack.swapper.resume(MODEL)

    assert status.state is SwapState.FAILED
    assert "before the route flipped" in status.message
    assert await stack.router.active(MODEL) == "1"


async def test_resume_completes_an_operation_interrupted_after_the_flip(stack, serving_version):
    await stack.versions.load(MODEL, "2")
    await stack.router.flip(MODEL, "2")
    running = replace(
        await stack.board.get(MODEL),
        state=SwapState.SWAPPING,
        operation="swap",
        previous_version="1",
        current_version="1",
        target_version="2",
    )
    await stack.board.put(running)

    status = await stack.swapper.resume(MODEL)

    assert status.state is SwapState.COMPLETED
    assert status.current_version == "2"


async def test_resume_leaves_a_finished_operation_alone(stack, serving_version):
    before = await stack.swapper.get_swap_status(MODEL)

    assert await stack.swapper.resume(MODEL) == before


async def test_a_swap_can_start_after_a_resumed_failure(stack, serving_version):
    running = replace(await stack.board.get(MODEL), state=SwapState.SWAPPING, target_version="2")
    await stack.board.put(running)
    await stack.swapper.resume(MODEL)

    assert (await stack.swapper.swap_version(MODEL, "1", "2")).success
