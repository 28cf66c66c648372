"""Fixtures for the fault tests: replicas, an RQ worker, traffic, and the four invariants.

Every fault test injects one fault into real processes and then checks the same four
things once the fault clears (`tests.live.settled`):

1. no request a live replica accepted failed because of the swap (`Traffic`, `Held`);
2. no swap record is left running: recovery runs as the product runs it (a worker
   starting, or its periodic sweep);
3. routing matches the database: ServedModel.active_version == the fleet's route ==
   what every replica answers;
4. the audit log tells what happened (each test names the entries it expects).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from swaps.models import ServedModel
from tests.fleet_models import gated_spec
from tests.processes import ReplicaProcess, start_replicas
from tests.workers import WorkerProcess, start_worker

# Short leases and heartbeats: a killed runner or replica is noticed within a second.
FAST = {"HOTSWAP_LEASE_TTL": "1.0", "HOTSWAP_HEARTBEAT_TTL": "1.0", "HOTSWAP_KEEP_WARM": "2"}


@pytest.fixture
def live_settings(live_settings):
    """tests/live_fleet.py's short leases and heartbeats, and a short keep-warm."""
    live_settings.HOTSWAP_KEEP_WARM = 2.0
    return live_settings


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
def held_model(replicas, db) -> ServedModel:
    """Model held on every replica: version 1 serving, 2 registered."""
    # Imported here: tests.live needs the control-plane plugin, loaded after conftests.
    from tests.live import serve

    return serve("held", [gated_spec(version="1"), gated_spec(version="2")], replicas)


@pytest.fixture
def iris_served(replicas, iris_specs, db) -> ServedModel:
    """Model iris on every replica: version 1 (sklearn) serving, 2 (onnx) registered."""
    from tests.live import serve

    return serve("iris", [iris_specs["1"], iris_specs["2"]], replicas)
