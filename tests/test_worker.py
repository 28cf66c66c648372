"""The RQ worker's upkeep (swaps/worker.py): sweeps that fail, and stops that must not."""

from __future__ import annotations

import threading

import pytest
import redis
from rq.exceptions import StopRequested
from rq.worker import Worker

from swaps import fleet_state, recovery
from swaps import worker as worker_module
from swaps.worker import SweepingWorker

from .processes import wait_until

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


def test_a_warm_shutdown_does_not_wait_out_the_command_listeners_poll(worker):
    # The state a busy host reached one stop in five: RQ's command listener had handled
    # the unsubscribe and gone back to waiting for a subscription when RQ stopped it.
    worker.subscribe()
    listener = worker.pubsub_thread
    wait_until(lambda: worker.pubsub.subscribed, timeout=10, what="the subscription")
    subscription = WatchedEvent()
    subscription.set()
    worker.pubsub.subscribed_event = subscription
    worker.pubsub.unsubscribe()
    wait_until(subscription.waited_for.is_set, timeout=10, what="the listener to wait")

    stopping = threading.Thread(target=worker.unsubscribe, daemon=True)
    stopping.start()
    stopping.join(timeout=2 * worker_module.COMMAND_POLL_SECONDS + 3)

    assert not stopping.is_alive(), "the worker's teardown is still waiting for its listener"
    assert not listener.is_alive()


class WatchedEvent(threading.Event):
    """The pubsub's "subscribed" event, telling when its listener waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited_for = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waited_for.set()
        return super().wait(timeout)
