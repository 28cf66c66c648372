"""The RQ worker's upkeep (swaps/worker.py): sweeps that fail, and stops that must not."""

from __future__ import annotations

import pytest
import redis
from rq.exceptions import StopRequested
from rq.worker import Worker

from swaps import fleet_state, recovery
from swaps import worker as worker_module
from swaps.worker import SweepingWorker

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker(control_plane, settings, monkeypatch):
    from django_rq import get_connection

    monkeypatch.setattr(fleet_state, "republish_at_startup", lambda: None)
    return SweepingWorker(
        [settings.HOTSWAP_RQ_QUEUE], connection=get_connection(settings.HOTSWAP_RQ_QUEUE)
    )


def test_a_stop_requested_during_a_sweep_stops_the_worker(worker, monkeypatch):
    def stopped_mid_sweep():
        raise StopRequested  # what RQ's SIGTERM handler raises in an idle worker

    monkeypatch.setattr(recovery, "sweep", stopped_mid_sweep)

    with pytest.raises(StopRequested):
        worker.run_maintenance_tasks()


def test_a_failing_sweep_is_logged_and_the_worker_goes_on(worker, monkeypatch, caplog):
    def broken():
        raise RuntimeError("database is locked")

    monkeypatch.setattr(recovery, "sweep", broken)

    worker.run_maintenance_tasks()

    assert "the recovery sweep failed" in caplog.text


def test_a_redis_lost_as_the_worker_turns_idle_is_waited_for(worker, monkeypatch, caplog):
    # RQ's own retry covers only the wait for a job; its first write as it turns idle
    # (set_state) raised out of the worker, which quit.
    calls = []

    def flaky(self, timeout, max_idle_time=None):
        calls.append(timeout)
        if len(calls) < 3:
            raise redis.exceptions.ConnectionError("Connection refused")
        return None

    slept: list[float] = []
    monkeypatch.setattr(Worker, "dequeue_job_and_maintain_ttl", flaky)
    monkeypatch.setattr(worker_module.time, "sleep", slept.append)

    assert worker.dequeue_job_and_maintain_ttl(1) is None
    assert (len(calls), slept) == (3, [1.0, 2.0])
    assert "Redis is unreachable (Connection refused)" in caplog.text
