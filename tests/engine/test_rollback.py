"""rollback_version: back to a version served before, the route first, then the drain."""

from __future__ import annotations

import asyncio

import pytest

from swaps.engine import errors
from swaps.engine.errors import InvalidSwap, UnhealthyVersion, UnknownVersion
from swaps.engine.hotswapper import WARM, SwapPolicy
from swaps.engine.results import HealthCheckResult, SwapState

from .conftest import MODEL, held_request, infer, wait_entered


@pytest.fixture
async def swapped_to_2(stack, serving_version, transitions) -> str:
    await stack.swapper.swap_version(MODEL, "1", "2")
    transitions.seen.clear()
    return "2"


async def test_rollback_reverts_to_the_previous_version(stack, swapped_to_2):
    result = await stack.swapper.rollback_version(MODEL, "1")

    assert result.success
    assert (result.previous_version, result.new_version) == ("2", "1")
    assert await stack.router.active(MODEL) == "1"
    assert infer(stack).version == "1"


async def test_rollback_flips_route_before_drain(stack, swapped_to_2, gate, transitions):
    running = held_request(stack)
    await wait_entered()
    rollback = asyncio.create_task(stack.swapper.rollback_version(MODEL, "1"))

    draining = await transitions.wait_for(SwapState.DRAINING)

    assert draining.operation == "rollback"
    assert infer(stack).version == "1"
    assert await stack.inflight.pending(MODEL, "2") == 1
    gate.set()
    result = await rollback
    assert (await running).version == "2"
    assert result.requests_drained == 1


async def test_rollback_to_a_warm_version_does_not_reload_it(stack, swapped_to_2):
    warm = stack.versions.loaded(MODEL, "1")

    await stack.swapper.rollback_version(MODEL, "1")

    assert stack.versions.loaded(MODEL, "1") is warm


@pytest.fixture
def health_checks(stack, monkeypatch) -> list[tuple[str, str]]:
    """Every health check the engine runs from here on: (model, version)."""
    checks: list[tuple[str, str]] = []
    check_health = stack.versions.check_health

    async def counted(model_id: str, version: str):
        checks.append((model_id, version))
        return await check_health(model_id, version)

    monkeypatch.setattr(stack.versions, "check_health", counted)
    return checks


async def test_rollback_to_a_warm_healthy_version_does_not_check_it_again(
    stack, swapped_to_2, health_checks, transitions
):
    result = await stack.swapper.rollback_version(MODEL, "1")

    assert result.success
    assert health_checks == []
    draining = await transitions.wait_for(SwapState.DRAINING)
    assert draining.message == f"rolled back to version 1 ({WARM}); draining version 2"


async def test_rollback_to_a_version_whose_last_check_failed_checks_it_again(
    stack, swapped_to_2, health_checks, monkeypatch
):
    failing = HealthCheckResult.failure(model_id=MODEL, version="1", reason="it went bad")
    monkeypatch.setattr(stack.versions, "check_health_now", lambda spec, model: failing)
    assert not (await stack.swapper.check_version_health(MODEL, "1")).healthy
    health_checks.clear()

    with pytest.raises(UnhealthyVersion):
        await stack.swapper.rollback_version(MODEL, "1")

    assert health_checks == [(MODEL, "1")]
    assert await stack.router.active(MODEL) == "2"


async def test_a_warm_version_a_rollback_keeps_is_no_longer_due_to_unload(
    stack, swapped_to_2, health_checks
):
    assert (MODEL, "2") not in stack.versions.pending_unloads()
    assert (MODEL, "1") in stack.versions.pending_unloads()  # the swap left it warm

    await stack.swapper.rollback_version(MODEL, "1")

    assert health_checks == []
    assert stack.versions.pending_unloads() == [(MODEL, "2")]  # only the version it left


async def test_rollback_to_an_unloaded_version_loads_it_first(stack, serving_version):
    stack.swapper.policy = SwapPolicy(keep_warm=0, drain_timeout=1)
    await stack.swapper.swap_version(MODEL, "1", "2")
    assert not await stack.versions.is_loaded(MODEL, "1")

    result = await stack.swapper.rollback_version(MODEL, "1")

    assert result.success
    assert infer(stack).version == "1"


async def test_rollback_to_the_original_production_version(stack, swapped_to_2):
    await stack.swapper.swap_version(MODEL, "2", "3")

    result = await stack.swapper.rollback_version(MODEL, "1")

    assert (result.previous_version, result.new_version) == ("3", "1")
    assert infer(stack).version == "1"


async def test_rollback_to_a_version_never_served_is_refused(stack, swapped_to_2):
    with pytest.raises(InvalidSwap) as refused:
        await stack.swapper.rollback_version(MODEL, "3")

    assert refused.value.message == errors.NOT_SERVED_BEFORE.format(model_id=MODEL, version="3")
    assert await stack.router.active(MODEL) == "2"


async def test_rollback_to_the_active_version_is_refused(stack, swapped_to_2):
    with pytest.raises(InvalidSwap, match="already active"):
        await stack.swapper.rollback_version(MODEL, "2")


async def test_rollback_to_unknown_version_is_refused(stack, swapped_to_2):
    with pytest.raises(UnknownVersion):
        await stack.swapper.rollback_version(MODEL, "9")


async def test_rollback_records_when_and_how_fast_the_route_flipped(stack, swapped_to_2):
    result = await stack.swapper.rollback_version(MODEL, "1")

    assert result.flip_seconds > 0
    assert result.rollback_time.tzinfo is not None
