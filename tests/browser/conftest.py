"""One stage per browser test module: a daphne console, a replica and an RQ worker.

Starting the three for every test cost each test 5-9 s on a loaded host, most of the
browser tests' time. They are started once per module, on a Redis namespace and RQ
queue of the module's own, and each test gets them as `console`, `replica` and
`worker`. Between tests the database is emptied (the tests are transactional) and the
processes keep running, as a console and a fleet outlive the records an operator
deletes: each test's models are published afresh (a route at a newer epoch), and what
the last test left in Redis (a route, a status, chart points) is overwritten or
harmless. A test that leaves a request held would hold it for the next one: tests
release what they hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from django.test import override_settings

from ..processes import ReplicaProcess, drop_namespace, start_replica
from ..workers import ConsoleProcess, WorkerProcess, start_console, start_worker

# What tests/live_fleet.py's live_settings gives a test, for the processes too.
STAGE_SETTINGS = {
    "HOTSWAP_LEASE_TTL": 1.0,
    "HOTSWAP_HEARTBEAT_TTL": 2.5,
    "HOTSWAP_DRAIN_TIMEOUT": 60.0,
}


@dataclass
class Stage:
    namespace: str
    queue: str
    console: ConsoleProcess
    replica: ReplicaProcess
    worker: WorkerProcess


def _queue_settings(redis_url: str, namespace: str) -> dict:
    queue = f"{namespace}-swaps"
    return {
        "REDIS_URL": redis_url,
        "HOTSWAP_NAMESPACE": namespace,
        "HOTSWAP_RQ_QUEUE": queue,
        "RQ_QUEUES": {queue: {"URL": redis_url, "DEFAULT_TIMEOUT": 3600}},
    }


@pytest.fixture(scope="module")
def stage(django_db_setup, redis_url, tmp_path_factory) -> Iterator[Stage]:
    namespace = f"test-{uuid.uuid4().hex}"
    log_dir = tmp_path_factory.mktemp("stage")
    started: list = []
    try:
        # The processes read their configuration from these settings (tests/workers.py).
        with override_settings(**_queue_settings(redis_url, namespace), **STAGE_SETTINGS):
            replica = start_replica(namespace=namespace, redis_url=redis_url, log_dir=log_dir)
            started.append(replica)
            console = start_console(log_dir, HOTSWAP_DRAIN_TIMEOUT="60")
            started.append(console)
            worker = start_worker(log_dir, HOTSWAP_DRAIN_TIMEOUT="60")
            started.append(worker)
        yield Stage(namespace, f"{namespace}-swaps", console, replica, worker)
    finally:
        for process in reversed(started):
            process.stop()
        drop_namespace(redis_url, namespace)
        with redis.Redis.from_url(redis_url) as client:
            keys = list(client.scan_iter(match=f"rq:*{namespace}*", count=1000))
            if keys:
                client.delete(*keys)


# The fixtures of tests/control_plane.py and tests/live_fleet.py, on the module's stage.


@pytest.fixture
def redis_namespace(stage: Stage) -> str:
    return stage.namespace  # its keys outlive the test: the stage's processes use them


@pytest.fixture
def control_plane(settings, stage: Stage, redis_url: str) -> str:
    for name, value in _queue_settings(redis_url, stage.namespace).items():
        setattr(settings, name, value)
    settings.HOTSWAP_DRAIN_TIMEOUT = 5.0
    return stage.namespace


@pytest.fixture
def replica(live_settings, stage: Stage) -> ReplicaProcess:
    return stage.replica


@pytest.fixture
def console(live_settings, stage: Stage) -> ConsoleProcess:
    return stage.console


@pytest.fixture
def worker(live_settings, stage: Stage) -> WorkerProcess:
    return stage.worker
