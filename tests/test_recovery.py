"""The recovery sweep: an operation whose runner died is finished or failed, never left."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import async_to_sync
from django.utils import timezone

from swaps import audit, job_queue, jobs, leases, lifecycle, recovery, rollbacks, swapping
from swaps.engine.results import SwapState, SwapStatus
from swaps.models import AuditEntry, ServedModel, Swap

# Real commits: the sweep's recovery jobs are queued on commit, like in production.
pytestmark = pytest.mark.django_db(transaction=True)


def lose_job(swap: Swap) -> None:
    """The job that would have run the operation is gone (deleted from RQ)."""
    swap.refresh_from_db()
    job_queue.queue().fetch_job(swap.rq_job_id).delete()


def lapse_lease(swap: Swap) -> None:
    """Its lease ran out (as it does HOTSWAP_LEASE_TTL after its holder stopped renewing)."""
    with leases.sync_client() as client:
        client.delete(leases.lease_key(swap.pk))


@pytest.fixture
def orphaned_drain(alice, served_before) -> Swap:
    """A rollback that flipped to version 1 and whose drain job never ran (lost); the
    lease the flip handed to that job has lapsed."""
    rollback = rollbacks.request_rollback(
        model="iris", target_version="1", reason="bad", user=alice, via="test"
    )
    assert rollback.swap.state == "draining"
    lose_job(rollback.swap)
    lapse_lease(rollback.swap)
    return rollback.swap


def test_a_drain_whose_job_was_lost_is_left_alone_while_the_handed_over_lease_lives(
    alice, served_before
):
    rollback = rollbacks.request_rollback(
        model="iris", target_version="1", reason="bad", user=alice, via="test"
    )
    lose_job(rollback.swap)

    assert recovery.sweep().recovering == []


def claimed_by_a_worker(alice) -> Swap:
    """A swap 1 -> 2 that a worker took (Pending -> Swapping), before any engine step."""
    swap = swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")
    lifecycle.transition(
        swap_id=swap.pk,
        state=Swap.State.SWAPPING,
        leaving=(Swap.State.PENDING,),
        message="started by a worker",
    )
    return swap


@pytest.fixture
def orphaned_before_flip(alice, candidate_version, engine) -> Swap:
    """A swap 1 -> 2 whose worker died after claiming the model, before the flip."""
    swap = claimed_by_a_worker(alice)
    status = SwapStatus(
        model_id="iris",
        current_version="1",
        target_version="2",
        state=SwapState.SWAPPING,
        start_time=timezone.now(),
        pending_requests=0,
        operation="swap",
        previous_version="1",
        operation_id=str(swap.pk),
    )
    async_to_sync(engine.board.begin)(status)
    lose_job(swap)
    return Swap.objects.get(pk=swap.pk)


def recover(swap: Swap) -> Swap:
    """What a worker does with the job the sweep queued."""
    swap.refresh_from_db()
    job = job_queue.queue().fetch_job(swap.rq_job_id)
    job.func(*job.args)
    swap.refresh_from_db()
    return swap


def test_the_sweep_queues_a_recovery_for_a_drain_without_a_runner(orphaned_drain):
    report = recovery.sweep()

    assert report.recovering == [orphaned_drain.pk]


def test_the_recovery_finishes_the_drain(orphaned_drain):
    recovery.sweep()

    assert recover(orphaned_drain).state == "completed"


def test_the_record_shows_the_recovery_among_its_transitions(orphaned_drain):
    recovery.sweep()

    swap = recover(orphaned_drain)

    messages = list(swap.transitions.values_list("message", flat=True))
    assert any(m.startswith("recovered after its runner stopped") for m in messages)


def test_a_recovery_is_audited_with_its_reason(orphaned_drain):
    recovery.sweep()

    entry = AuditEntry.objects.get(action=audit.RECOVER)
    assert (entry.model, entry.details["swap"]) == ("iris", orphaned_drain.pk)
    assert "is gone" in entry.details["reason"]


def test_after_recovery_the_database_matches_the_route(orphaned_drain, iris, engine):
    recovery.sweep()
    recover(orphaned_drain)

    iris.refresh_from_db()
    assert iris.active_version.version == engine.route("iris") == "1"


def test_a_swap_interrupted_before_the_flip_fails_with_the_reason(orphaned_before_flip):
    recovery.sweep()

    swap = recover(orphaned_before_flip)

    assert swap.state == "failed"
    assert "before the route flipped" in swap.message


def test_an_earlier_operations_end_on_the_board_is_not_taken_for_this_ones(
    alice, candidate_version, engine, iris
):
    # The worker died after claiming the record, before the engine claimed the model:
    # the board still holds an earlier operation's end, to the same target, stamped by
    # a host whose clock runs an hour ahead. Only the operation's id tells them apart.
    swap = claimed_by_a_worker(alice)
    earlier = SwapStatus(
        model_id="iris",
        current_version="1",
        target_version="2",
        state=SwapState.COMPLETED,
        start_time=timezone.now() + timedelta(hours=1),
        end_time=timezone.now() + timedelta(hours=1),
        pending_requests=0,
        operation="swap",
        message="swapped from version 1 to 2",
        operation_id="earlier-operation",
    )
    async_to_sync(engine.board.put)(earlier)
    lose_job(swap)
    recovery.sweep()

    swap = recover(swap)

    assert swap.state == "failed"
    assert "the route never flipped" in swap.message
    iris.refresh_from_db()
    assert iris.active_version.version == engine.route("iris") == "1"


def test_a_swap_interrupted_before_the_flip_leaves_routing_untouched(
    orphaned_before_flip, iris, engine
):
    recovery.sweep()
    recover(orphaned_before_flip)

    iris.refresh_from_db()
    assert iris.active_version.version == engine.route("iris") == "1"


def test_a_swap_interrupted_after_the_flip_is_completed(orphaned_before_flip, engine, iris):
    engine.router.apply("iris", "2", 99)  # the flip happened; the worker died right after

    recovery.sweep()
    swap = recover(orphaned_before_flip)

    iris.refresh_from_db()
    assert (swap.state, iris.active_version.version) == ("completed", "2")


def test_an_operation_whose_runner_holds_its_lease_is_left_alone(orphaned_drain):
    with leases.sync_client() as client:
        client.set(leases.lease_key(orphaned_drain.pk), "another-host:1", px=60_000)

    assert recovery.sweep().recovering == []


def test_an_operation_whose_job_is_still_queued_is_left_alone(orphaned_drain):
    job_queue.queue().enqueue(
        jobs.drain_rollback, orphaned_drain.pk, job_id=orphaned_drain.rq_job_id
    )

    assert recovery.sweep().recovering == []


def test_a_swap_just_accepted_is_given_time_to_start(alice, candidate_version):
    swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")

    assert recovery.sweep().recovering == []


def test_a_pending_swap_whose_job_was_lost_is_left_alone_for_its_grace(
    alice, candidate_version, iris, engine
):
    swap = swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")
    lose_job(swap)

    almost = swap.created_at + recovery.PENDING_GRACE - timedelta(seconds=1)
    with time_machine.travel(almost, tick=False):
        assert recovery.sweep().recovering == []


def test_a_pending_swap_whose_job_was_lost_fails_without_changing_anything(
    alice, candidate_version, iris, engine
):
    swap = swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")
    lose_job(swap)

    with time_machine.travel(swap.created_at + recovery.PENDING_GRACE + timedelta(seconds=1)):
        assert recovery.sweep().recovering == [swap.pk]
    swap = recover(swap)

    assert (swap.state, swap.message) == ("failed", swapping.LOST_BEFORE_START)
    assert engine.route("iris") == "1"


def test_a_job_taken_off_its_queue_by_a_worker_that_died_is_recovered(
    alice, candidate_version, iris, engine
):
    swap = swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")
    swap.refresh_from_db()
    job_queue.queue().remove(swap.rq_job_id)  # dequeued; the worker died before marking it started

    with time_machine.travel(swap.created_at + recovery.PENDING_GRACE + timedelta(seconds=1)):
        assert recovery.sweep().recovering == [swap.pk]


def test_two_sweeps_queue_one_recovery(orphaned_drain):
    first, second = recovery.sweep(), recovery.sweep()

    assert (first.recovering, second.recovering) == ([orphaned_drain.pk], [])


def test_the_sweep_republishes_a_redis_that_came_back_empty(serving_version, engine):
    engine.empty = True

    report = recovery.sweep()

    assert report.republished
    assert engine.republished[-1] == {"iris": ("1", ["1"])}


def test_the_sweep_leaves_a_redis_that_holds_the_state(serving_version, engine):
    published = len(engine.republished)

    assert not recovery.sweep().republished
    assert len(engine.republished) == published


def test_a_rollback_whose_web_process_died_mid_flip_is_recovered(
    alice, served_before, iris, engine
):
    # The request created and claimed the rollback, then died before the flip: no job
    # was ever queued for it, and its lease lapsed.
    served = ServedModel.objects.get(pk=iris.pk)
    swap = lifecycle.create_operation(
        served=served,
        kind=Swap.Kind.ROLLBACK,
        source=served.active_version,
        target=served_before,
        user=alice,
    )
    lifecycle.transition(
        swap_id=swap.pk,
        state=Swap.State.SWAPPING,
        leaving=(Swap.State.PENDING,),
        message="flipping the route",
    )

    assert recovery.sweep().recovering == [swap.pk]
    swap = recover(swap)
    iris.refresh_from_db()
    assert swap.state == "failed"
    assert iris.active_version.version == engine.route("iris") == "2"
