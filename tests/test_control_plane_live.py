"""The control plane end to end: API -> RQ worker process -> replica process, on real Redis.

A real `manage.py rqworker` (the project's SweepingWorker) and a real replica
(`python -m swaps.replica`) run as subprocesses on this test's Redis namespace, RQ
queue and database. Requests go through the API as alice and bob would send them.
"""

from __future__ import annotations

import pytest

from swaps import leases
from swaps.models import ServedModel, Swap

from .control_plane import client_for, post_json
from .fleet_models import gated_spec
from .live import Held, audit_trail, finished, pending, route
from .live_fleet import answer, serve
from .processes import wait_until
from .workers import start_worker

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def iris(replica, iris_specs, db) -> ServedModel:
    return serve("iris", [iris_specs["1"], iris_specs["2"]], replica)


@pytest.fixture
def held_model(replica, db) -> ServedModel:
    return serve("held", [gated_spec(version="1"), gated_spec(version="2")], replica)


def test_a_swap_goes_from_the_api_to_completed_through_a_real_worker(alice, iris, replica, worker):
    response = post_json(
        client_for(alice), "/api/models/iris/swaps", {"from_version": "1", "to_version": "2"}
    )
    assert response.status_code == 202

    swap = finished(response.json()["id"], worker)

    iris.refresh_from_db()
    assert (swap.state, iris.active_version.version) == ("completed", "2")
    assert [t.state for t in swap.transitions.all()][:3] == ["pending", "swapping", "swapping"]
    assert answer(replica, "iris")["model_version"] == route("iris") == "2"
    assert audit_trail("iris") == [
        ("alice", "start_swap", "accepted"),
        ("alice", "finish", "completed"),
    ]


def test_an_approval_gated_rollback_goes_from_the_api_to_completed(
    alice, bob, iris, replica, worker
):
    swap_id = post_json(
        client_for(alice), "/api/models/iris/swaps", {"from_version": "1", "to_version": "2"}
    ).json()["id"]
    finished(swap_id, worker)
    ServedModel.objects.filter(pk=iris.pk).update(rollback_requires_approval=True)

    waiting = post_json(
        client_for(alice),
        "/api/models/iris/rollbacks",
        {"target_version": "1", "reason": "version 2 answers wrong"},
    ).json()
    assert (waiting["state"], answer(replica, "iris")["model_version"]) == ("pending", "2")

    approved = post_json(client_for(bob), f"/api/rollbacks/{waiting['id']}/approve")
    assert approved.status_code == 202
    # The approval itself flipped the route: the replica answers with 1 before any job ran.
    assert answer(replica, "iris")["model_version"] == "1"

    rollback = finished(approved.json()["swap"]["id"], worker)

    iris.refresh_from_db()
    assert (rollback.kind, rollback.state, iris.active_version.version) == (
        "rollback",
        "completed",
        "1",
    )
    assert route("iris") == "1"
    assert audit_trail("iris")[2:] == [
        ("alice", "request_rollback", "accepted"),
        ("bob", "approve_rollback", "accepted"),
        ("alice", "finish", "completed"),
    ]


def test_a_worker_killed_mid_drain_is_recovered_by_the_next_worker(
    alice, held_model, replica, worker, tmp_path
):
    held = Held(replica)
    wait_until(lambda: pending("held", "1") == 1, timeout=30, what="a request in flight")

    swap_id = post_json(
        client_for(alice), "/api/models/held/swaps", {"from_version": "1", "to_version": "2"}
    ).json()["id"]
    wait_until(
        lambda: Swap.objects.get(pk=swap_id).state == "draining",
        timeout=60,
        what="the swap to drain",
    )
    worker.kill_with_its_work_horse()

    assert Swap.objects.get(pk=swap_id).state == "draining"  # left behind by the dead worker

    successor = start_worker(tmp_path, name="successor", HOTSWAP_DRAIN_TIMEOUT="60")
    try:
        # The recovery note is written before the successor takes the runner's lease (the
        # dead runner's lapsed first, or the sweep would not have called it orphaned).
        wait_until(
            lambda: recovered(Swap.objects.get(pk=swap_id)) and leases.leased_swaps([swap_id]),
            timeout=60,
            what="the successor to take the swap over",
        )
        assert Swap.objects.get(pk=swap_id).state == "draining"  # it waits for the request
        held.release()
        swap = finished(swap_id, successor)
    finally:
        successor.stop()

    held_model.refresh_from_db()
    assert (swap.state, swap.requests_remaining) == ("completed", 0)
    assert recovered(swap)
    assert held_model.active_version.version == route("held") == "2"
    assert answer(replica, "held")["model_version"] == "2"
    # The request running at the flip was never cut off.
    assert held.outcome()["model_version"] == "1"
    assert ("sweep", "recover", "accepted") in audit_trail("held")


def recovered(swap: Swap) -> bool:
    return any(
        t.message.startswith("recovered after its runner stopped") for t in swap.transitions.all()
    )
