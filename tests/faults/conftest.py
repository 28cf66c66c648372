"""Fixtures for the fault tests: replicas, an RQ worker, traffic, and the four invariants.

Every fault test injects one fault into real processes and then checks the same four
things once the fault clears (`settled`):

1. no request a live replica accepted failed because of the swap (`Traffic`, `Held`);
2. no swap record is left running: recovery runs as the product runs it (a worker
   starting, or its periodic sweep);
3. routing matches the database: ServedModel.active_version == the fleet's route ==
   what every replica answers;
4. the audit log tells what happened (each test names the entries it expects).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from swaps.demo_models import sleepy_spec
from swaps.models import ServedModel, Swap
from tests.live import answer, finished, serve, wait_agreed
from tests.processes import Process, ReplicaProcess, start_replicas
from tests.workers import WorkerProcess, start_worker

# Short leases and heartbeats: a killed runner or replica is noticed within a second.
FAST = {"HOTSWAP_LEASE_TTL": "1.0", "HOTSWAP_HEARTBEAT_TTL": "1.0", "HOTSWAP_KEEP_WARM": "2"}


@pytest.fixture
def live_settings(settings, control_plane):
    settings.HOTSWAP_LEASE_TTL = 1.0
    settings.HOTSWAP_HEARTBEAT_TTL = 1.0
    settings.HOTSWAP_DRAIN_TIMEOUT = 60.0
    settings.HOTSWAP_KEEP_WARM = 2.0
    return settings


@pytest.fixture
def start_fleet(live_settings, tmp_path) -> Iterator[Callable[..., list[ReplicaProcess]]]:
    """Start replicas on this test's namespace and Redis; all stopped afterwards."""
    started: list[ReplicaProcess] = []

    def start(count: int = 1) -> list[ReplicaProcess]:
        replicas = start_replicas(
            count,
            namespace=live_settings.HOTSWAP_NAMESPACE,
            redis_url=live_settings.REDIS_URL,
            log_dir=tmp_path,
        )
        started.extend(replicas)
        return replicas

    yield start
    for replica in started:
        replica.stop()


@pytest.fixture
def replicas(start_fleet) -> list[ReplicaProcess]:
    return start_fleet(1)


@pytest.fixture
def start_workers(live_settings, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `manage.py rqworker` processes (the SweepingWorker); all stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(name: str = "worker", **env: str) -> WorkerProcess:
        worker = start_worker(
            tmp_path,
            name=name,
            **{**FAST, "HOTSWAP_DRAIN_TIMEOUT": "60", "REDIS_URL": live_settings.REDIS_URL, **env},
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def worker(start_workers) -> WorkerProcess:
    return start_workers()


@pytest.fixture
def sleepy(replicas, db) -> ServedModel:
    """Model sleepy on every replica: version 1 serving, 2 registered."""
    return serve("sleepy", [sleepy_spec(version="1"), sleepy_spec(version="2")], replicas)


class Held:
    """One request the replica holds for `seconds` (sleepy), sent from a thread."""

    def __init__(self, replica: ReplicaProcess, *, seconds: float, model: str = "sleepy") -> None:
        self.replica = replica
        self.result: dict = {}
        self.error = ""
        self._thread = threading.Thread(target=self._send, args=(model, seconds), daemon=True)
        self._thread.start()

    def _send(self, model: str, seconds: float) -> None:
        try:
            self.result = answer(self.replica, model, seconds=seconds)
        except Exception as exc:  # recorded: the test decides whether it may fail
            self.error = f"{type(exc).__name__}: {exc}"

    def outcome(self, timeout: float = 90.0) -> dict:
        self._thread.join(timeout)
        return self.result


def settled(model: str, replicas: list[ReplicaProcess], worker: Process) -> str:
    """Invariants 2 and 3 once the fault cleared: every swap final, everyone agreeing.

    Returns the version the database, the fleet and every replica name.
    """
    for swap in Swap.objects.filter(served_model__name=model, state__in=Swap.RUNNING):
        finished(swap.pk, worker)
    assert not Swap.objects.filter(state__in=Swap.RUNNING).exists()
    return wait_agreed(model, replicas)

