"""A rollout's engine steps: check the candidate, split the route, promote or abort."""

from __future__ import annotations

import pytest

from swaps.engine.errors import SwapConflict, UnhealthyVersion
from swaps.engine.results import SwapState
from swaps.engine.router import LocalRouter, Split, decode_route, encode_route, key_share

from .conftest import MODEL, held_request, infer, wait_entered


def answered_by(stack, count: int, *, key: str | None = None) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(count):
        chosen, _ = stack.dispatcher.begin(MODEL, key=key)
        stack.dispatcher.end(MODEL, chosen)
        seen[chosen] = seen.get(chosen, 0) + 1
    return seen


@pytest.mark.parametrize(
    "version, split",
    [("1", None), ("1", Split("2", 10)), ("v-1.2_a", Split("v.3", 100, shadow=True))],
)
def test_a_route_survives_its_encoding(version, split):
    assert decode_route(encode_route(version, split)) == (version, split)


async def test_a_rollout_checks_the_candidate_and_leaves_routing_alone(stack, serving_version):
    status = await stack.swapper.begin_rollout(MODEL, "1", "2", operation_id="7")

    assert status.state is SwapState.SWAPPING
    assert status.operation == "rollout"
    assert await stack.versions.is_loaded(MODEL, "2")
    assert answered_by(stack, 50) == {"1": 50}
    with pytest.raises(SwapConflict):  # the model is claimed while it runs
        await stack.swapper.swap_version(MODEL, "1", "3")


async def test_a_rollout_to_an_unhealthy_candidate_is_refused(stack, serving_version):
    with pytest.raises(UnhealthyVersion):
        await stack.swapper.begin_rollout(MODEL, "1", "broken")

    assert (await stack.swapper.get_swap_status(MODEL)).state is SwapState.FAILED
    assert await stack.router.split(MODEL) is None


async def test_a_canary_sends_its_weight_of_requests_to_the_candidate(stack, serving_version):
    status = await stack.swapper.begin_rollout(MODEL, "1", "2")
    status = await stack.swapper.split_rollout(status, 30)

    seen = answered_by(stack, 4000)
    assert abs(seen["2"] / 4000 - 0.30) < 0.03
    assert infer(stack, version="1").version == "1"  # pinned requests go where they ask
    assert await stack.router.active(MODEL) == "1"  # the stable version is still the active one
    assert "30 % of requests routed to version 2" in status.message


async def test_a_routing_key_always_lands_on_the_same_side(stack, serving_version):
    status = await stack.swapper.begin_rollout(MODEL, "1", "2")
    await stack.swapper.split_rollout(status, 50)

    sides = {key: answered_by(stack, 20, key=key) for key in (f"user-{i}" for i in range(40))}

    assert all(len(seen) == 1 for seen in sides.values())
    assert {next(iter(seen)) for seen in sides.values()} == {"1", "2"}
    for key, seen in sides.items():  # and the side is the key's share, on any replica
        assert next(iter(seen)) == ("2" if key_share(key) < 50 else "1")


async def test_a_shadow_answers_from_the_stable_version_and_copies_its_share(
    stack, serving_version
):
    status = await stack.swapper.begin_rollout(MODEL, "1", "2")
    await stack.swapper.split_rollout(status, 100, shadow=True)

    assert answered_by(stack, 200) == {"1": 200}
    assert stack.router.shadow(MODEL) == "2"
    assert stack.router.serves(MODEL, "2")  # the candidate stays loaded for its copies


async def test_promoting_a_rollout_routes_all_to_the_candidate_and_drains_the_stable(
    stack, serving_version, gate
):
    status = await stack.swapper.begin_rollout(MODEL, "1", "2")
    status = await stack.swapper.split_rollout(status, 50)
    held = held_request(stack, version="1")
    await wait_entered()

    promoting = stack.swapper.promote_rollout(status, drain_timeout=10)
    gate.set()
    status = await promoting

    assert status.state is SwapState.COMPLETED
    assert (await held).version == "1"  # the request in flight on the stable one finished
    assert answered_by(stack, 100) == {"2": 100}
    assert await stack.router.split(MODEL) is None
    assert "swapped from version 1 to 2" in status.message


async def test_aborting_a_rollout_puts_all_traffic_back_and_unloads_the_candidate(
    stack, serving_version, gate
):
    status = await stack.swapper.begin_rollout(MODEL, "1", "2")
    status = await stack.swapper.split_rollout(status, 100)
    held = held_request(stack)  # on the candidate: weight 100
    await wait_entered()

    aborting = stack.swapper.abort_rollout(status, "error rate 9 % over 5 %", drain_timeout=10)
    gate.set()
    status = await aborting

    assert status.state is SwapState.FAILED
    assert (await held).version == "2"  # drained, not cut off
    assert answered_by(stack, 100) == {"1": 100}
    assert await stack.router.split(MODEL) is None
    assert not await stack.versions.is_loaded(MODEL, "2")
    assert status.message.startswith("error rate 9 % over 5 %; all traffic back on version 1 in")
    assert "1 request on version 2 drained" in status.message


async def test_a_rollout_whose_runner_died_resumes_to_the_stable_version(stack, serving_version):
    status = await stack.swapper.begin_rollout(MODEL, "1", "2")
    await stack.swapper.split_rollout(status, 40)

    resumed = await stack.swapper.resume(MODEL)

    assert resumed.state is SwapState.FAILED
    assert "interrupted before the rollout ended; all traffic back on version 1" in resumed.message
    assert answered_by(stack, 100) == {"1": 100}


def test_weights_zero_and_hundred_are_all_or_nothing_whatever_the_key():
    router = LocalRouter()
    router.replace(MODEL, "1", 1, Split("2", 0))
    assert {router.resolve(MODEL, key) for key in ("a", None, "b", "c") for _ in range(50)} == {"1"}
    router.replace(MODEL, "1", 2, Split("2", 100))
    assert {router.resolve(MODEL, key) for key in ("a", None, "b", "c") for _ in range(50)} == {"2"}
