"""The recovery sweep: operations whose runner died are finished or failed, never left.

A swap's runner (job, rollback request, drain job) holds the swap's lease while it
works (leases.py). The sweep looks at every record that is not final and takes over
those with no lease and no job still waiting to run: it queues a recovery job, which
resumes the operation through the engine (Draining: drain and complete; Swapping:
complete if the route flipped, else fail with routing untouched) and makes the
database match the fleet. Each RQ worker sweeps when it starts and then every
HOTSWAP_SWEEP_INTERVAL (swaps/worker.py); `manage.py sweep_swaps` sweeps on demand.

The sweep first checks whether Redis came back empty, and republishes the fleet state
from the database if so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus

from swaps import audit, fleet_state, job_queue, jobs, leases, quarantine
from swaps.models import Swap
from swaps.refusals import Refused

log = logging.getLogger(__name__)

# A Pending record is committed a moment before its job is queued (on commit) and before
# its runner takes the lease: give it this long before calling it lost.
PENDING_GRACE = timedelta(seconds=30)
WAITING = (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED)

RUNNER_STOPPED = "recovered after its runner stopped ({why})"
REDIS_EMPTY = "Redis had lost the fleet's state: routes and versions republished from the database"


@dataclass
class SweepReport:
    republished: bool = False
    recovering: list[int] = field(default_factory=list)  # swap ids handed to recovery jobs
    fleet_error: str = ""
    quarantined: list[str] = field(default_factory=list)  # versions recorded as quarantined


def sweep() -> SweepReport:
    """Republish an empty Redis; queue a recovery for each operation without a runner."""
    report = SweepReport()
    try:
        report.republished = fleet_state.republish_if_empty()
    except Refused as exc:
        report.fleet_error = exc.message
        log.warning("sweep: the fleet cannot be reached: %s", exc.message)
    if report.republished:
        audit.audit(
            actor="sweep",
            via="worker",
            action=audit.REPUBLISH,
            outcome="accepted",
            details={"reason": REDIS_EMPTY},
        )
    report.quarantined = [
        f"{v.served_model.name} {v.version}" for v in quarantine.record_fleet_quarantines()
    ]
    running = list(Swap.objects.filter(state__in=Swap.RUNNING).select_related("served_model"))
    if not running:
        return report
    leased = leases.leased_swaps([swap.pk for swap in running])
    connection = job_queue.queue().connection
    for swap in running:
        if swap.pk in leased:
            continue
        why = _orphaned(swap, connection)
        if why is None:
            continue
        reason = RUNNER_STOPPED.format(why=why)
        if job_queue.enqueue_recovery(swap, reason=reason):
            report.recovering.append(swap.pk)
            audit.audit(
                actor="sweep",
                via="worker",
                action=audit.RECOVER,
                outcome="accepted",
                model=swap.served_model.name,
                details={"swap": swap.pk, "reason": reason, "job": swap.rq_job_id},
            )
            log.warning("sweep: swap %s of %s: %s", swap.pk, swap.served_model.name, reason)
    return report


def _orphaned(swap: Swap, connection) -> str | None:
    """Why nobody is running this unleased operation, or None if its job will."""
    if swap.state == Swap.State.PENDING and timezone.now() - swap.created_at < PENDING_GRACE:
        return None
    if not swap.rq_job_id:
        return "no job, and its lease lapsed"
    try:
        job = jobs.HotswapJob.fetch(
            swap.rq_job_id, connection=connection, serializer=job_queue.SERIALIZER
        )
    except NoSuchJobError:
        return f"job {swap.rq_job_id} is gone"
    status = job.get_status(refresh=False)
    lease = timedelta(seconds=settings.HOTSWAP_LEASE_TTL)
    # A worker takes a job off its queue a moment before marking it started: one that dies
    # in between leaves it "queued" in no queue, where no worker will ever find it.
    if (
        status == JobStatus.QUEUED
        and job_queue.queue().get_job_position(job.id) is None
        and job.enqueued_at is not None
        and timezone.now() - job.enqueued_at > lease
    ):
        return f"job {swap.rq_job_id} left its queue but never started: its worker died"
    if status in WAITING:
        return None
    if status == JobStatus.STARTED:
        started = job.started_at
        # Just started: its runner may not have taken the lease yet.
        if started is not None and timezone.now() - started < lease:
            return None
        return f"job {swap.rq_job_id} was running, but its lease lapsed: its worker died"
    return f"job {swap.rq_job_id} is {status}"
