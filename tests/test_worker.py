"""The RQ worker's upkeep (swaps/worker.py): sweeps that fail, and stops that must not."""

from __future__ import annotations

import pytest
from rq.exceptions import StopRequested

from swaps import fleet_state, recovery
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
