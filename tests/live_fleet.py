"""Live tests' fleet: a real replica and RQ worker, models they serve, requests to them.

A pytest plugin (loaded by tests/conftest.py): its fixtures are everyone's.
"""

from __future__ import annotations

import pytest

from swaps.models import ServedModel

from . import live
from .live import IRIS_ROW, answer
from .processes import ReplicaProcess, start_replica
from .workers import start_worker

__all__ = ["IRIS_ROW", "answer", "serve"]


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
    return live.serve(name, specs, [replica])
