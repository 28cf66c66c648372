"""Rollbacks: flipped at once by the request itself, or held until a second user approves."""

from __future__ import annotations

import pytest
from django.db import transaction

from swaps import audit, job_queue, jobs, rollbacks, swapping
from swaps.models import AuditEntry, RollbackRequest, ServedModel, Swap
from swaps.refusals import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    OperationFailed,
    OperationUnavailable,
)

pytestmark = pytest.mark.django_db

REASON = "version 2 misclassifies setosa"


def request(user, *, target="1", model="iris", reason=REASON) -> RollbackRequest:
    return rollbacks.request_rollback(
        model=model, target_version=target, reason=reason, user=user, via="test"
    )


@pytest.fixture
def approval_required(iris):
    ServedModel.objects.filter(pk=iris.pk).update(rollback_requires_approval=True)


def test_a_rollback_flips_the_route_before_the_request_returns(alice, served_before, engine):
    request(alice)

    assert engine.route("iris") == "1"


def test_a_rollback_is_draining_when_the_request_returns(alice, served_before):
    rollback = request(alice)

    assert (rollback.swap.kind, rollback.swap.state) == ("rollback", "draining")


def test_a_rollback_records_the_new_active_version_at_the_flip(alice, iris, served_before):
    request(alice)

    iris.refresh_from_db()
    assert iris.active_version == served_before


def test_a_rollback_queues_its_drain_as_a_job(alice, served_before, control_plane):
    rollback = request(alice)

    assert rollback.swap.rq_job_id == f"{control_plane}-drain-{rollback.swap.pk}"


def test_the_drain_job_completes_the_rollback(alice, served_before):
    rollback = request(alice)

    jobs.drain_rollback(rollback.swap.pk)

    rollback.swap.refresh_from_db()
    assert rollback.swap.state == "completed"


def test_a_drain_job_that_starts_before_the_request_returns_completes_the_rollback(
    alice, served_before, monkeypatch
):
    # A worker may start the drain job the moment it is queued, while the request that
    # flipped the route is still on its way out.
    queue_drain = job_queue.enqueue_drain

    def queued_and_started_at_once(swap_id: int) -> None:
        queue_drain(swap_id)
        jobs.drain_rollback(swap_id)

    monkeypatch.setattr(job_queue, "enqueue_drain", queued_and_started_at_once)

    rollback = request(alice)

    rollback.swap.refresh_from_db()
    assert rollback.swap.state == "completed"


def test_a_rollback_without_approval_needs_no_second_user(alice, served_before):
    rollback = request(alice)

    assert (rollback.state, rollback.approval_required, rollback.decided_by) == (
        "approved",
        False,
        None,
    )


def test_a_gated_rollback_waits_for_approval(alice, served_before, approval_required):
    rollback = request(alice)

    assert (rollback.state, rollback.swap) == ("pending", None)


def test_a_gated_rollback_leaves_the_route_alone(alice, served_before, approval_required, engine):
    request(alice)

    assert engine.route("iris") == "2"
    assert not Swap.objects.filter(kind="rollback").exists()


def test_approval_by_another_approver_flips_the_route(
    alice, bob, served_before, approval_required, engine
):
    waiting = request(alice)

    approved = rollbacks.approve_rollback(request_id=waiting.pk, user=bob, via="test")

    assert (approved.state, approved.decided_by, approved.swap.state) == (
        "approved",
        bob,
        "draining",
    )
    assert engine.route("iris") == "1"


def test_the_approved_rollback_is_recorded_as_asked_by_the_requester(
    alice, bob, served_before, approval_required
):
    waiting = request(alice)

    approved = rollbacks.approve_rollback(request_id=waiting.pk, user=bob, via="test")

    assert approved.swap.requested_by == alice


def test_nobody_approves_their_own_request(bob, served_before, approval_required, engine):
    waiting = request(bob)

    with pytest.raises(Forbidden, match="their own"):
        rollbacks.approve_rollback(request_id=waiting.pk, user=bob, via="test")

    waiting.refresh_from_db()
    assert (waiting.state, engine.route("iris")) == ("pending", "2")


def test_approving_needs_the_approve_permission(alice, mallory, served_before, approval_required):
    waiting = request(alice)

    with pytest.raises(Forbidden, match=r"swaps\.approve_rollback"):
        rollbacks.approve_rollback(request_id=waiting.pk, user=mallory, via="test")


def test_an_operator_without_approve_permission_cannot_approve(
    alice, bob, served_before, approval_required
):
    waiting = request(bob)

    with pytest.raises(Forbidden, match=r"swaps\.approve_rollback"):
        rollbacks.approve_rollback(request_id=waiting.pk, user=alice, via="test")


def test_a_rejected_request_changes_nothing(
    alice, bob, iris, served_before, approval_required, engine
):
    waiting = request(alice)

    rejected = rollbacks.reject_rollback(request_id=waiting.pk, user=bob, via="test")

    iris.refresh_from_db()
    assert (rejected.state, rejected.decided_by, rejected.swap) == ("rejected", bob, None)
    assert (engine.route("iris"), iris.active_version.version) == ("2", "2")


def test_a_rejected_request_cannot_be_approved(alice, bob, served_before, approval_required):
    waiting = request(alice)
    rollbacks.reject_rollback(request_id=waiting.pk, user=bob, via="test")

    with pytest.raises(Conflict, match="was rejected already"):
        rollbacks.approve_rollback(request_id=waiting.pk, user=bob, via="test")


def test_approving_an_unknown_request_is_refused(bob, iris):
    with pytest.raises(NotFound, match="rollback request 999 does not exist"):
        rollbacks.approve_rollback(request_id=999, user=bob, via="test")


def test_a_rollback_to_a_version_that_never_served_is_refused(alice, served_before):
    with pytest.raises(Invalid) as refusal:
        request(alice, target="3")

    assert "never served" in refusal.value.fields["target_version"]


def test_a_rollback_to_the_active_version_is_refused(alice, served_before):
    with pytest.raises(Invalid) as refusal:
        request(alice, target="2")

    assert "already serves" in refusal.value.fields["target_version"]


def test_a_rollback_needs_a_reason(alice, served_before):
    with pytest.raises(Invalid) as refusal:
        request(alice, reason="  ")

    assert refusal.value.fields == {"reason": rollbacks.REASON_MISSING}


def test_a_rollback_is_refused_while_a_swap_of_the_model_runs(alice, served_before):
    swapping.start_swap(model="iris", from_version="2", to_version="3", user=alice, via="test")

    with pytest.raises(Conflict, match="already running"):
        request(alice)


def test_a_rollback_refused_for_a_running_swap_leaves_no_request_behind(alice, served_before):
    swapping.start_swap(model="iris", from_version="2", to_version="3", user=alice, via="test")

    with pytest.raises(Conflict):
        request(alice)

    assert not RollbackRequest.objects.exists()


def test_approval_refused_for_a_running_swap_leaves_the_request_waiting(
    alice, bob, served_before, approval_required
):
    waiting = request(alice)
    swapping.start_swap(model="iris", from_version="2", to_version="3", user=alice, via="test")

    with pytest.raises(Conflict):
        rollbacks.approve_rollback(request_id=waiting.pk, user=bob, via="test")

    waiting.refresh_from_db()
    assert waiting.state == "pending"


def test_every_rollback_attempt_is_audited(alice, bob, mallory, served_before, approval_required):
    waiting = request(alice)
    with pytest.raises(Forbidden):
        rollbacks.approve_rollback(request_id=waiting.pk, user=mallory, via="test")
    rollbacks.approve_rollback(request_id=waiting.pk, user=bob, via="test")

    entries = AuditEntry.objects.filter(
        action__in=[audit.REQUEST_ROLLBACK, audit.APPROVE_ROLLBACK]
    ).order_by("id")
    assert [(e.actor, e.action, e.outcome) for e in entries] == [
        ("alice", "request_rollback", "accepted"),
        ("mallory", "approve_rollback", "refused"),
        ("bob", "approve_rollback", "accepted"),
    ]


def test_a_rollback_to_a_version_that_fails_its_check_is_an_error_naming_why(
    alice, served_before, unhealthy_target
):
    with pytest.raises(OperationFailed, match=r"routing is unchanged: .*boom"):
        request(alice)


def test_a_rollback_to_a_version_that_fails_its_check_keeps_the_route(
    alice, served_before, unhealthy_target, engine
):
    with pytest.raises(OperationFailed):
        request(alice)

    assert engine.route("iris") == "2"


def test_a_rollback_to_a_version_that_fails_its_check_is_recorded_as_failed(
    alice, served_before, unhealthy_target
):
    with pytest.raises(OperationFailed):
        request(alice)

    swap = Swap.objects.get(kind="rollback")
    assert (swap.state, swap.rollback_request.state) == ("failed", "approved")
    assert "boom" in swap.message


def test_a_rollback_that_cannot_reach_the_fleet_is_worth_retrying(
    alice, served_before, engine, monkeypatch
):
    from swaps import leases
    from swaps.engine.errors import FleetUnavailable

    async def unreachable(self, *, takes_over):
        raise FleetUnavailable("Redis is unreachable")

    monkeypatch.setattr(leases.Lease, "take", unreachable)

    with pytest.raises(OperationUnavailable, match="Redis is unreachable"):
        request(alice)


def test_the_rollback_flip_commits_before_its_drain_job_is_queued(alice, served_before):
    with transaction.atomic():
        rollback = request(alice)

    assert Swap.objects.get(pk=rollback.swap.pk).state == "draining"
