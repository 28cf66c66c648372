"""SIGKILL a replica while a swap drains: the drain stops counting it and completes."""

from __future__ import annotations

import pytest

from swaps.demo_models import sleepy_spec
from swaps.models import ServedModel, Swap
from tests.live import Held, Traffic, api_swap, audit_trail, pending, reaches, serve, settled
from tests.processes import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

HELD_SECONDS = 6.0


@pytest.fixture
def replicas(start_fleet):
    return start_fleet(2)


@pytest.fixture
def sleepy(replicas, db) -> ServedModel:
    return serve("sleepy", [sleepy_spec(version="1"), sleepy_spec(version="2")], replicas)


def test_a_replica_killed_mid_drain_leaves_the_swap_completed_on_the_survivors(
    alice, sleepy, replicas, worker, start_fleet
):
    doomed, survivor = replicas
    kept, lost = Held(survivor, seconds=HELD_SECONDS), Held(doomed, seconds=HELD_SECONDS)
    wait_until(lambda: pending("sleepy", "1") == 2, timeout=30, what="two requests in flight")

    with Traffic(replicas, model="sleepy") as traffic:
        swap_id = api_swap(alice, "sleepy", "1", "2")
        reaches(swap_id, "draining")
        doomed.kill()
        version = settled("sleepy", [survivor], worker)

    swap = Swap.objects.get(pk=swap_id)
    lost.outcome()
    # 1. The survivor answered everything, the request it held at the flip included.
    assert traffic.failures(excluding=(doomed.replica_id,)) == {}
    assert kept.outcome()["model_version"] == "1"
    # 2. The swap completed: the dead replica's request stopped counting with its heartbeat.
    assert (swap.state, swap.requests_remaining) == ("completed", 0)
    # 3. Database, fleet and survivor agree, and a replacement replica joins on the route.
    (replacement,) = start_fleet(1)
    assert version == settled("sleepy", [survivor, replacement], worker) == "2"
    # 4. The audit log tells it.
    assert audit_trail("sleepy") == [
        ("alice", "start_swap", "accepted"),
        ("alice", "finish", "completed"),
    ]
