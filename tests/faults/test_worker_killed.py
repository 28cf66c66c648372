"""SIGKILL the RQ worker (and the work horse running the job) mid-swap and mid-rollback.

Mid-swap: the target version takes seconds to load, so the worker dies while the
swap is Swapping, before the route flipped. Mid-rollback: the rollback flipped the
route in the web process, and the worker dies while its job drains the left version.
Either way the next worker to start (its sweep) takes the operation over.
"""

from __future__ import annotations

import pytest

from swaps import leases
from swaps.models import ServedModel, Swap
from tests.control_plane import client_for, post_json
from tests.fleet_models import GATED_LOAD_FACTORY, Gate, gated_spec
from tests.live import (
    Held,
    Traffic,
    api_swap,
    audit_trail,
    finished,
    pending,
    reaches,
    serve,
    settled,
)
from tests.processes import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def load_gate(live_settings):
    """Version 2's load waits for this gate; released at the end so no load is left hanging."""
    gate = Gate.for_loads(live_settings.REDIS_URL, live_settings.HOTSWAP_NAMESPACE)
    yield gate
    gate.release()


@pytest.fixture
def slow_held(replicas, load_gate, db) -> ServedModel:
    """held 1 serving; version 2's load on a replica waits until `load_gate` opens."""
    slow = gated_spec(version="2", factory=GATED_LOAD_FACTORY)
    return serve("held", [gated_spec(version="1"), slow], replicas)


def drain_job_holds_lease(swap_id: int) -> bool:
    """The worker took the drain job: the lease is held, no longer only handed over to it
    (a worker killed before that leaves the job queued, and its successor simply runs it)."""
    with leases.sync_client() as client:
        holder = client.get(leases.lease_key(swap_id))
    return holder is not None and not holder.decode().startswith(leases.handed_over_to(""))


def state(swap_id: int) -> str:
    return Swap.objects.get(pk=swap_id).state


def test_a_worker_killed_mid_swap_fails_the_swap_with_routing_untouched(
    alice, slow_held, replicas, worker, start_workers
):
    with Traffic(replicas, model="held") as traffic:
        swap_id = api_swap(alice, "held", "1", "2")
        reaches(swap_id, "swapping")
        worker.kill_with_its_work_horse()
        killed_while = state(swap_id)

        successor = start_workers("successor")
        version = settled("held", replicas, successor)

    swap = Swap.objects.get(pk=swap_id)
    assert killed_while == "swapping"
    assert traffic.failures() == {}
    assert swap.state == "failed"
    # The engine's words or the recovery's, depending on when the worker died: both say it.
    assert "version 1 still serves model 'held'" in swap.message
    assert version == "1"
    assert audit_trail("held") == [
        ("alice", "start_swap", "accepted"),
        ("sweep", "recover", "accepted"),
        ("alice", "finish", "failed"),
    ]


@pytest.fixture
def swapped_held(alice, held_model, worker) -> ServedModel:
    """held swapped from 1 to 2 through the worker: 1 is a rollback target now."""
    assert finished(api_swap(alice, "held", "1", "2"), worker).state == "completed"
    return held_model


def test_a_worker_killed_mid_rollback_is_completed_by_the_next_worker(
    alice, swapped_held, replicas, worker, start_workers
):
    (replica,) = replicas
    assert settled("held", replicas, worker) == "2"
    held = Held(replica)
    wait_until(lambda: pending("held", "2") == 1, timeout=30, what="a request in flight")

    with Traffic(replicas, model="held") as traffic:
        rollback = post_json(
            client_for(alice),
            "/api/models/held/rollbacks",
            {"target_version": "1", "reason": "version 2 answers wrong"},
        ).json()
        swap_id = rollback["swap"]["id"]
        wait_until(lambda: drain_job_holds_lease(swap_id), timeout=60, what="the drain job to run")
        worker.kill_with_its_work_horse()
        killed_while = state(swap_id)

        successor = start_workers("successor")
        held.release()
        version = settled("held", replicas, successor)

    swap = Swap.objects.get(pk=swap_id)
    assert killed_while == "draining"
    assert traffic.failures() == {}
    assert held.outcome()["model_version"] == "2"
    assert (swap.state, swap.requests_remaining) == ("completed", 0)
    assert version == "1"
    assert audit_trail("held")[2:] == [
        ("alice", "request_rollback", "accepted"),
        ("sweep", "recover", "accepted"),
        ("alice", "finish", "completed"),
    ]
