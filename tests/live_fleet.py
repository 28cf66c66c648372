"""Live tests' fleet: a real replica and RQ worker, models they serve, requests to them.

A pytest plugin (loaded by tests/conftest.py): its fixtures are everyone's.
"""

from __future__ import annotations

import httpx
import pytest
from django.utils import timezone

from swaps import fleet_state
from swaps.models import ServedModel

from .control_plane import add_version
from .processes import ReplicaProcess, start_replica, wait_until
from .workers import start_worker

IRIS_ROW = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}


@pytest.fixture
def live_settings(settings, control_plane):
    settings.HOTSWAP_LEASE_TTL = 1.0
    settings.HOTSWAP_HEARTBEAT_TTL = 2.5
    settings.HOTSWAP_DRAIN_TIMEOUT = 60.0
    return settings


@pytest.fixture
def replica(live_settings, redis_url, tmp_path):
    started = start_replica(
        namespace=live_settings.HOTSWAP_NAMESPACE, redis_url=redis_url, log_dir=tmp_path
    )
    yield started
    started.stop()


@pytest.fixture
def worker(live_settings, tmp_path):
    started = start_worker(tmp_path, HOTSWAP_DRAIN_TIMEOUT="60")
    yield started
    started.stop()


def serve(name: str, specs, replica: ReplicaProcess) -> ServedModel:
    """Records for `specs` (the first active), published, and served by the replica."""
    served = ServedModel.objects.create(name=name)
    add_version(served, specs[0], first_served_at=timezone.now())
    for spec in specs[1:]:
        add_version(served, spec)
    served.active_version = served.versions.get(version=specs[0].version)
    served.save()
    fleet_state.republish_from_database()
    wait_until(lambda: answer(replica, name).get("model_version"), timeout=60, what="a route")
    return served


def answer(replica: ReplicaProcess, model: str, *, seconds: float = 0.0) -> dict:
    if model == "sleepy":
        row = {"name": "input-0", "shape": [1, 1], "datatype": "FP32", "data": [seconds]}
    else:
        row = IRIS_ROW
    response = httpx.post(
        f"{replica.url}/v2/models/{model}/infer", json={"inputs": [row]}, timeout=60
    )
    return response.json() if response.status_code == 200 else {}
