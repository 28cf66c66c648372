"""How often a replica reports: soon while a drain is under way, else once a heartbeat.

The replica runs in this process against the real Redis; no server, no sync task: each
test drives one report and asks when the next one is due.
"""

from __future__ import annotations

import pytest

from swaps.engine.fleet_keys import redis_client
from swaps.replica import Replica
from tests.fleet_models import gated_spec
from tests.processes import fleet_seal


@pytest.fixture
async def replica(redis_url, redis_namespace):
    replica = Replica(
        redis_client(redis_url),
        namespace=redis_namespace,
        seal=fleet_seal(),
        replica_id="r1",
        heartbeat_interval=0.5,
        drain_report_interval=0.05,
    )
    for version in ("1", "2"):
        replica.versions.register(gated_spec(version=version))
        await replica.versions.load("held", version)
    replica.router.apply("held", "1", 1)
    yield replica
    await replica.stop()
    await replica.redis.aclose()


async def test_an_idle_replica_reports_once_a_heartbeat(replica):
    await replica.sync_now()
    assert replica.next_report_delay() == 0.5


async def test_a_replica_reports_soon_while_a_request_drains(replica):
    replica.dispatcher.begin("held")
    replica.router.apply("held", "2", 2)
    await replica.sync_now()
    assert replica.next_report_delay() == 0.05


async def test_a_drain_that_ends_just_after_a_report_is_reported_soon(replica):
    chosen, _ = replica.dispatcher.begin("held")
    replica.router.apply("held", "2", 2)
    await replica.sync_now()  # reports one request in flight on version 1
    replica.dispatcher.end("held", chosen)
    assert replica.next_report_delay() == 0.05


async def test_after_reporting_the_drain_done_the_replica_reports_once_a_heartbeat(replica):
    chosen, _ = replica.dispatcher.begin("held")
    replica.router.apply("held", "2", 2)
    await replica.sync_now()
    replica.dispatcher.end("held", chosen)
    await replica.sync_now()  # reports none in flight
    assert replica.next_report_delay() == 0.5
