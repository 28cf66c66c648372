"""Redis dies and comes back empty while replicas take traffic.

Replicas keep serving their last routes through the outage; the worker's sweep sees
the empty Redis and republishes routes and versions from the database (audited); the
RQ queue lives in the same Redis, so a swap afterwards proves the worker recovered too.
The Redis is a private redis-server of this test's, never the shared one.
"""

from __future__ import annotations

import pytest
import redis

from swaps.engine.fleet_keys import FleetKeys
from tests.live import Traffic, api_swap, audit_trail, finished, settled
from tests.processes import start_redis, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def private_redis(live_settings, tmp_path):
    server = start_redis(tmp_path)
    live_settings.REDIS_URL = server.url
    live_settings.RQ_QUEUES = {
        live_settings.HOTSWAP_RQ_QUEUE: {"URL": server.url, "DEFAULT_TIMEOUT": 3600}
    }
    yield server
    server.stop()


@pytest.fixture
def replicas(private_redis, start_fleet):
    return start_fleet(2)


@pytest.fixture
def worker(private_redis, start_workers):
    return start_workers()


def routed(url: str, namespace: str, model: str) -> str | None:
    with redis.Redis.from_url(url, socket_timeout=2) as client:
        value = client.hget(FleetKeys(namespace).routes, model)
    return value.decode() if value is not None else None


def test_redis_restarted_empty_is_republished_while_replicas_keep_serving(
    alice, iris_served, replicas, worker, private_redis, tmp_path, control_plane
):
    # A first swap: the worker is up and past its start-up, so what follows is its sweep.
    assert finished(api_swap(alice, "iris", "1", "2"), worker).state == "completed"
    with Traffic(replicas) as traffic:
        settled("iris", replicas, worker)
        served_before = traffic.answered()
        private_redis.kill()
        # The fixture stops it: on the same port, it is the one that must not be left over.
        private_redis.popen = start_redis(tmp_path, port=private_redis.port).popen
        wait_until(
            lambda: routed(private_redis.url, control_plane, "iris") == "2",
            timeout=60,
            what="the sweep to republish the route",
        )
        assert finished(api_swap(alice, "iris", "2", "1"), worker).state == "completed"
        version = settled("iris", replicas, worker)

    assert traffic.failures() == {}
    assert traffic.answered() > served_before
    assert version == "1"
    assert ("sweep", "republish_fleet", "accepted") in audit_trail("")
    assert (
        audit_trail("iris")
        == [
            ("alice", "start_swap", "accepted"),
            ("alice", "finish", "completed"),
        ]
        * 2
    )
