"""RQ jobs: a thin layer that takes ids, loads rows and calls the domain.

Whoever can write to Redis can queue a job, so a job is data, never code: RQ stores it
as JSON (job_queue.SERIALIZER, named in settings.RQ_QUEUES), not as a pickle, and a
worker runs only the functions below (`HotswapJob`), never whatever a queued job names
(`os.system`, say). The domain queues them through job_queue.py, by name.
"""

from __future__ import annotations

from rq.job import Job

from swaps import job_queue, rollouts, swapping


def run_swap(swap_id: int) -> str:
    """Run a swap or first deploy from start to its final state."""
    return swapping.run_swap(swap_id=swap_id).state


def run_rollout(swap_id: int) -> str:
    """Run a rollout's steps to its end: Completed, or Failed back on the stable version."""
    return rollouts.run_rollout(swap_id=swap_id).state


def drain_rollback(swap_id: int) -> str:
    """The second half of a rollback whose route already flipped: drain, complete.

    The flip handed the swap's lease to this job (by its id) before queueing it.
    """
    takes_over = job_queue.job_id(job_queue.DRAIN, swap_id)
    return swapping.resume_swap(swap_id=swap_id, takes_over=takes_over).state


def recover_swap(swap_id: int, reason: str) -> str:
    """Finish (or fail) an operation whose runner died; make the database match."""
    return swapping.resume_swap(swap_id=swap_id, reason=reason).state


NOT_A_JOB = "job {job_id} names {name!r}, which is not a Hotswap job: refused, nothing ran"


class RefusedJob(Exception):
    pass


class HotswapJob(Job):
    """RQ's job, running only `job_queue.JOB_FUNCTIONS` (settings.RQ["JOB_CLASS"])."""

    @property
    def func(self):
        name = self.func_name
        if self.instance is not None or name not in job_queue.JOB_FUNCTIONS:
            raise RefusedJob(NOT_A_JOB.format(job_id=self.id, name=name))
        return super().func
