"""RQ jobs: queued after the transaction commits, under ids the records carry."""

from __future__ import annotations

import pytest
import redis
from django.db import transaction

from swaps import job_queue, jobs, swapping
from swaps.models import Swap

pytestmark = pytest.mark.django_db(transaction=True)


def start(user) -> Swap:
    return swapping.start_swap(model="iris", from_version="1", to_version="2", user=user, via="t")


def test_a_swap_job_is_queued_once_the_transaction_commits(alice, candidate_version):
    with transaction.atomic():
        swap = start(alice)
        queued_inside = list(job_queue.queue().job_ids)

    assert queued_inside == []
    assert job_queue.queue().job_ids == [swap.rq_job_id]


def test_a_swap_rolled_back_with_its_transaction_queues_no_job(alice, candidate_version):
    with pytest.raises(RuntimeError), transaction.atomic():
        start(alice)
        raise RuntimeError("the caller's transaction fails")

    assert job_queue.queue().job_ids == []
    assert not Swap.objects.exists()


def test_the_queued_job_runs_the_swap_of_the_record(alice, candidate_version):
    swap = start(alice)

    job = jobs.HotswapJob.fetch(
        swap.rq_job_id, connection=job_queue.queue().connection, serializer=job_queue.SERIALIZER
    )

    assert (job.func, list(job.args)) == (jobs.run_swap, [swap.pk])


def test_the_job_id_carries_the_namespace(control_plane):
    assert job_queue.job_id("swap", 7) == f"{control_plane}-swap-7"


def test_a_job_id_uses_only_characters_rq_accepts(settings):
    settings.HOTSWAP_NAMESPACE = "prod:eu.1"

    assert job_queue.job_id("swap", 7) == "prod_eu_1-swap-7"


def test_a_swap_whose_job_cannot_be_queued_fails_saying_why(alice, candidate_version, settings):
    queue = settings.HOTSWAP_RQ_QUEUE
    settings.RQ_QUEUES = {queue: {"URL": "redis://127.0.0.1:1/0"}}  # nothing listens there

    swap = start(alice)

    assert swap.state == "failed"
    assert swap.message.startswith("its job could not be queued")


def test_redis_failing_after_the_job_is_queued_leaves_the_swap_pending(
    alice, candidate_version, monkeypatch
):
    def lost(*args, **kwargs):
        raise redis.ConnectionError("Redis went away after the enqueue")

    monkeypatch.setattr(job_queue, "workers_listening", lost)

    swap = start(alice)

    swap.refresh_from_db()
    assert (swap.state, swap.message) == ("pending", "queued by alice")
    assert job_queue.queue().job_ids == [swap.rq_job_id]
