"""check_version_health and drain_version through the engine."""

from __future__ import annotations

import asyncio

import pytest

from swaps.engine.errors import UnknownVersion

from .conftest import MODEL, held_request, wait_entered


async def test_health_passes_for_a_good_loaded_version(stack, serving_version):
    health = await stack.swapper.check_version_health(MODEL, "1")

    assert health.healthy
    assert health.loaded and health.inference_ran and health.output_valid
    assert health.memory_within_limit
    assert health.latency_ms is not None and health.latency_ms >= 0
    assert health.reason == ""


async def test_health_fails_for_a_version_with_wrong_output(stack):
    await stack.versions.load(MODEL, "broken")

    health = await stack.swapper.check_version_health(MODEL, "broken")

    assert not health.healthy
    assert health.inference_ran and not health.output_valid
    assert "shape" in health.reason


async def test_health_fails_for_a_version_that_is_not_loaded(stack):
    health = await stack.swapper.check_version_health(MODEL, "2")

    assert not health.healthy
    assert not health.loaded
    assert "not loaded" in health.reason


async def test_health_of_unknown_version_is_refused(stack):
    with pytest.raises(UnknownVersion):
        await stack.swapper.check_version_health(MODEL, "9")


async def test_drain_completes_when_requests_finish(stack, serving_version, gate):
    held = held_request(stack)
    await wait_entered()
    gate.set()
    await held

    drained = await stack.swapper.drain_version(MODEL, "1", timeout=5)

    assert drained
    assert drained.requests_remaining == 0


async def test_drain_times_out_with_requests_still_running(stack, serving_version, gate):
    held = held_request(stack)
    await wait_entered()

    drained = await stack.swapper.drain_version(MODEL, "1", timeout=0.05)

    assert not drained
    assert drained.requests_remaining == 1
    gate.set()
    assert (await held).version == "1"


async def test_drain_counts_requests_that_finished_during_it(stack, serving_version, gate):
    held = [held_request(stack) for _ in range(3)]
    await wait_entered(3)

    drain = asyncio.create_task(stack.swapper.drain_version(MODEL, "1", timeout=5))
    await asyncio.sleep(0)  # the drain takes its starting count before the gate opens
    gate.set()
    drained = await drain
    await asyncio.gather(*held)

    assert drained.requests_drained == 3
