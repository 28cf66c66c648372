"""Runner leases: one runner per operation, visible to the sweep while it runs."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync

from swaps import leases


async def held_during(swap_id: int) -> set[int]:
    async with leases.hold(swap_id):
        return leases.leased_swaps([swap_id, swap_id + 1])


async def second_runner(swap_id: int) -> None:
    async with leases.hold(swap_id):
        async with leases.hold(swap_id):
            pass


def test_a_held_lease_is_seen_by_the_sweep(control_plane):
    assert async_to_sync(held_during)(7) == {7}


def test_a_lease_is_let_go_when_its_runner_finishes(control_plane):
    async_to_sync(held_during)(7)

    assert leases.leased_swaps([7]) == set()


def test_a_second_runner_is_refused_the_lease(control_plane):
    with pytest.raises(leases.LeaseHeld, match="swap 7 is already being run by"):
        async_to_sync(second_runner)(7)


def test_a_lease_lives_under_the_namespace(control_plane):
    assert leases.lease_key(7) == f"{control_plane}:lease:swap:7"


async def hand_over(swap_id: int, runner: str) -> None:
    async with leases.hold(swap_id) as lease:
        await lease.hand_over(runner)


async def taken_over(swap_id: int, runner: str) -> set[int]:
    await hand_over(swap_id, runner)
    async with leases.hold(swap_id, takes_over=runner):
        return leases.leased_swaps([swap_id])


def test_a_handed_over_lease_outlives_the_runner_that_handed_it(control_plane):
    async_to_sync(hand_over)(7, "drain-7")

    assert leases.leased_swaps([7]) == {7}


def test_the_runner_a_lease_was_handed_to_takes_it(control_plane):
    assert async_to_sync(taken_over)(7, "drain-7") == {7}


def test_the_runner_a_lease_was_handed_to_lets_it_go_when_it_finishes(control_plane):
    async_to_sync(taken_over)(7, "drain-7")

    assert leases.leased_swaps([7]) == set()


def test_a_handed_over_lease_is_refused_to_any_other_runner(control_plane):
    async_to_sync(hand_over)(7, "drain-7")

    with pytest.raises(
        leases.LeaseHeld, match="swap 7 is already being run by handed over to drain-7"
    ):
        async_to_sync(taken_over)(7, "recover-7")


async def released_while_a_renewal_swallows_its_cancel(swap_id: int) -> None:
    async def swallows_cancel(*args):  # a Redis call whose client swallows a cancel
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            pass
        return 1

    async with leases.hold(swap_id, ttl=0.03) as lease:
        lease._client.eval = swallows_cancel  # renewals every 10 ms from here on
        await asyncio.sleep(0.05)


@pytest.mark.timeout(60)  # a hang here is the failure
def test_letting_go_of_a_lease_never_hangs_on_its_renewal(control_plane):
    async_to_sync(released_while_a_renewal_swallows_its_cancel)(7)  # returns: not hung
