"""Queueing the RQ jobs that run operations, and asking whether a worker listens.

Jobs go to the HOTSWAP_RQ_QUEUE queue, named by their function's dotted path (jobs.py
holds the functions; this module imports none of the domain, so the domain can queue
without importing what its jobs run). Enqueueing inside a transaction waits for the
commit (django-rq's on_db_commit mode), so a job never looks for a row that is not
there yet. Job ids are derived from the swap (and the namespace), so a job's id is
on the record before the job exists, and the recovery sweep can look it up.
"""

from __future__ import annotations

import re
import uuid

import django_rq
from django.conf import settings
from django_rq.connection_utils import get_connection
from redis import Redis
from rq import worker_registration
from rq.job import Job
from rq.serializers import JSONSerializer

from swaps.models import Swap

_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")
DRAIN = "drain"

# The jobs, by the name RQ records (swaps/jobs.py defines each; a worker runs no other).
RUN_SWAP = "swaps.jobs.run_swap"
DRAIN_ROLLBACK = "swaps.jobs.drain_rollback"
RECOVER_SWAP = "swaps.jobs.recover_swap"
RUN_ROLLOUT = "swaps.jobs.run_rollout"
JOB_FUNCTIONS = frozenset({RUN_SWAP, DRAIN_ROLLBACK, RECOVER_SWAP, RUN_ROLLOUT})

# How jobs are stored (settings.RQ_QUEUES names it too, for django-rq and the worker):
# whoever can write to Redis can queue a job, so a job is data, never a pickle.
SERIALIZER = JSONSerializer


def job_id(kind: str, swap_id: int, *, unique: bool = False) -> str:
    """e.g. "hotswap-swap-42": RQ ids are global to its Redis, so the namespace is in."""
    name = f"{settings.HOTSWAP_NAMESPACE}-{kind}-{swap_id}"
    if unique:
        name += f"-{uuid.uuid4().hex[:8]}"
    return _NOT_ID.sub("_", name)


def queue() -> django_rq.queues.DjangoRQ:
    return django_rq.get_queue(
        settings.HOTSWAP_RQ_QUEUE, connection=_connection(), serializer=SERIALIZER
    )


def _connection() -> Redis:
    """One client, and so one connection pool, per process and queue setting (redis-py's
    pool reconnects after a fork and retries a dropped connection). django-rq builds a
    new client for every queue it hands out: a new TCP connection and handshake on each
    enqueue, a few milliseconds an instant rollback's answer waited for."""
    setting = repr(sorted(settings.RQ_QUEUES[settings.HOTSWAP_RQ_QUEUE].items()))
    client = _clients.get(setting)
    if client is None:  # two threads may both build one: either does
        client = _clients[setting] = get_connection(settings.HOTSWAP_RQ_QUEUE)
    return client


_clients: dict[str, Redis] = {}


def workers_listening() -> int:
    """Workers alive on the queue. A worker registers under the queue and keeps a key of
    its own alive with its heartbeat; one killed outright stays registered until RQ
    cleans up, so only those whose key still exists count."""
    on = queue()
    keys = sorted(worker_registration.get_keys(queue=on))
    return int(on.connection.exists(*keys)) if keys else 0


def enqueue_swap(swap: Swap) -> Job | None:
    """Queue the swap's job once the transaction commits; its id is on the record now."""
    swap.rq_job_id = job_id("swap", swap.pk)
    Swap.objects.filter(pk=swap.pk).update(rq_job_id=swap.rq_job_id)
    return queue().enqueue(RUN_SWAP, swap.pk, job_id=swap.rq_job_id)


def enqueue_rollout(swap: Swap) -> Job | None:
    """Queue a rollout's job on commit. No timeout: a step may wait for a person, and
    the job ends the rollout itself (abort, analysis, or the last step)."""
    swap.rq_job_id = job_id("rollout", swap.pk)
    Swap.objects.filter(pk=swap.pk).update(rq_job_id=swap.rq_job_id)
    return queue().enqueue(RUN_ROLLOUT, swap.pk, job_id=swap.rq_job_id, job_timeout=-1)


def enqueue_drain(swap_id: int) -> Job | None:
    """Queue a flipped rollback's drain (its record names the job since the claim)."""
    return queue().enqueue(DRAIN_ROLLBACK, swap_id, job_id=job_id(DRAIN, swap_id))


def enqueue_recovery(swap: Swap, *, reason: str) -> bool:
    """Queue a recovery, unless another sweep claimed the swap first (conditional UPDATE)."""
    rq_job_id = job_id("recover", swap.pk, unique=True)
    claimed = Swap.objects.filter(
        pk=swap.pk, rq_job_id=swap.rq_job_id, state__in=Swap.RUNNING
    ).update(rq_job_id=rq_job_id)
    if claimed:
        swap.rq_job_id = rq_job_id
        queue().enqueue(RECOVER_SWAP, swap.pk, reason, job_id=rq_job_id)
    return bool(claimed)
