"""A job queued straight into Redis by someone with no account runs no code on the worker.

Before, `Queue("swaps").enqueue("os.system", ...)` ran on the worker, and so would any
pickle whose unpickling runs code (RQ's default serializer). The worker now reads jobs
as JSON and runs only Hotswap's own job functions (swaps/jobs.py).
"""

from __future__ import annotations

import os

import pytest
import redis
from django.conf import settings
from rq import Queue
from rq.job import Job
from rq.serializers import DefaultSerializer, JSONSerializer

from swaps import jobs

from .processes import wait_until

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]


class RunsOnUnpickling:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def ended(job_id: str, serializer) -> Job | None:
    with redis.Redis.from_url(settings.REDIS_URL) as client:
        job = Job.fetch(job_id, connection=client, serializer=serializer)
        return job if job.get_status() in ("finished", "failed") else None


def forged_queue(serializer) -> Queue:
    return Queue(
        settings.HOTSWAP_RQ_QUEUE,
        connection=redis.Redis.from_url(settings.REDIS_URL),
        serializer=serializer,
    )


def test_a_queued_job_naming_any_function_but_hotswaps_runs_nothing(worker, tmp_path):
    mark = tmp_path / "ran"
    queued = forged_queue(JSONSerializer).enqueue("os.system", f"touch {mark}")

    job = wait_until(lambda: ended(queued.id, JSONSerializer), timeout=60, what="the job")

    assert job.get_status() == "failed"
    refusal = job.latest_result().exc_string
    assert "'os.system', which is not a Hotswap job: refused, nothing ran" in refusal
    assert not mark.exists()


def test_a_pickled_job_is_never_unpickled(worker, tmp_path):
    mark = tmp_path / "ran"
    payload = RunsOnUnpickling(f"touch {mark}")
    queued = forged_queue(DefaultSerializer).enqueue(jobs.run_swap, payload)

    job = wait_until(lambda: ended(queued.id, JSONSerializer), timeout=60, what="the job")

    assert job.get_status() == "failed"
    assert not mark.exists()
    assert worker.alive()
