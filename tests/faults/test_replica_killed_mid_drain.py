"""SIGKILL a replica while a swap drains: the drain stops counting it and completes."""

from __future__ import annotations

import pytest

from swaps.models import ServedModel, Swap
from tests.fleet_models import gated_spec
from tests.live import Held, Traffic, api_swap, audit_trail, pending, reaches, serve, settled
from tests.processes import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def replicas(start_fleet):
    return start_fleet(2)


@pytest.fixture
def held_model(replicas, db) -> ServedModel:
    return serve("held", [gated_spec(version="1"), gated_spec(version="2")], replicas)


def test_a_replica_killed_mid_drain_leaves_the_swap_completed_on_the_survivors(
    alice, held_model, replicas, worker, start_fleet
):
    doomed, survivor = replicas
    kept, lost = Held(survivor), Held(doomed)
    wait_until(lambda: pending("held", "1") == 2, timeout=30, what="two requests in flight")

    with Traffic(replicas, model="held") as traffic:
        swap_id = api_swap(alice, "held", "1", "2")
        reaches(swap_id, "draining")
        doomed.kill()
        kept.release()  # the drain now waits only for the survivor's request
        version = settled("held", [survivor], worker)

    swap = Swap.objects.get(pk=swap_id)
    lost.join()  # cut off with its replica
    # 1. The survivor answered everything, the request it held at the flip included.
    assert traffic.failures(excluding=(doomed.replica_id,)) == {}
    assert kept.outcome()["model_version"] == "1"
    # 2. The swap completed: the dead replica's request stopped counting with its heartbeat.
    assert (swap.state, swap.requests_remaining) == ("completed", 0)
    # 3. Database, fleet and survivor agree, and a replacement replica joins on the route.
    (replacement,) = start_fleet(1)
    assert version == settled("held", [survivor, replacement], worker) == "2"
    # 4. The audit log tells it.
    assert audit_trail("held") == [
        ("alice", "start_swap", "accepted"),
        ("alice", "finish", "completed"),
    ]
