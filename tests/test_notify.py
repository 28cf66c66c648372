"""The console's hook: `swaps.broadcast` hears of each change once it has committed."""

from __future__ import annotations

import pytest
from django.db import transaction

import swaps.broadcast
from swaps import jobs, swapping

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broadcast(monkeypatch) -> list:
    """The console's broadcast functions, replaced by ones that record what they are told."""
    heard: list = []
    monkeypatch.setattr(
        swaps.broadcast, "swap_changed", lambda swap: heard.append((swap.pk, swap.state))
    )
    monkeypatch.setattr(
        swaps.broadcast,
        "rollback_request_changed",
        lambda request: heard.append(("request", request.state)),
    )
    return heard


def start(user):
    return swapping.start_swap(model="iris", from_version="1", to_version="2", user=user, via="t")


def test_the_console_hears_of_a_swap_once_it_is_committed(alice, candidate_version, broadcast):
    with transaction.atomic():
        swap = start(alice)
        assert broadcast == []

    assert broadcast == [(swap.pk, "pending")]


def test_the_console_hears_every_transition(alice, candidate_version, broadcast):
    swap = start(alice)

    jobs.run_swap(swap.pk)

    states = [state for swap_id, state in broadcast if swap_id == swap.pk]
    assert states[0] == "pending" and states[-1] == "completed"
    assert "draining" in states


def test_a_broadcast_that_fails_does_not_fail_the_swap(alice, candidate_version, broadcast):
    swaps.broadcast.swap_changed = lambda swap: 1 / 0  # restored by the fixture's monkeypatch

    swap = start(alice)
    jobs.run_swap(swap.pk)

    swap.refresh_from_db()
    assert swap.state == "completed"
