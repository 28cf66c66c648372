"""Swaps across a real fleet: Redis, two replica processes, the engine on Fleet ports.

The engine runs in the test process; the replicas are `python -m swaps.replica`
subprocesses on their own ports, loading the demo iris models for real inference.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import httpx
import pytest

from swaps.engine.errors import FleetUnavailable, UnhealthyVersion
from swaps.engine.fleet import Fleet
from swaps.engine.hotswapper import ModelHotSwapper, SwapPolicy
from swaps.engine.reports import ReplicaReport
from swaps.engine.results import SwapState, utcnow
from tests.engine.conftest import Transitions
from tests.fleet_models import Gate, gated_spec

from .processes import (
    RedisProcess,
    ReplicaProcess,
    start_redis,
    start_replica,
    start_replicas,
)

pytestmark = pytest.mark.fleet

IRIS_ROW = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
# Long enough that a replica starved by a loaded CI machine is not taken for dead.
HEARTBEAT_TTL = 2.5


def quick_request() -> dict:
    return {"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP32", "data": [0]}]}


@pytest.fixture
def fleet_specs(iris_specs):
    return [*iris_specs.values(), gated_spec(version="1"), gated_spec(version="2")]


async def make_fleet(redis_url: str, redis_namespace: str, specs) -> Fleet:
    fleet = Fleet.from_url(
        redis_url,
        namespace=redis_namespace,
        heartbeat_ttl=HEARTBEAT_TTL,
        # Generous: on a loaded 2-core CI machine a replica can take seconds to ack.
        ack_timeout=30.0,
        load_timeout=90.0,
    )
    for spec in specs:
        await fleet.publish_spec(spec)
    return fleet


@pytest.fixture
async def fleet(redis_url, redis_namespace, fleet_specs):
    fleet = await make_fleet(redis_url, redis_namespace, fleet_specs)
    yield fleet
    await fleet.redis.aclose()


@pytest.fixture
def replicas(fleet, redis_url, redis_namespace, tmp_path):
    started = start_replicas(2, namespace=redis_namespace, redis_url=redis_url, log_dir=tmp_path)
    yield started
    for replica in started:
        replica.stop()


@pytest.fixture
def transitions() -> Transitions:
    return Transitions()


async def serving(fleet: Fleet, transitions: Transitions) -> ModelHotSwapper:
    swapper = fleet.swapper(
        policy=SwapPolicy(drain_timeout=60, keep_warm=60, status_interval=0.05),
        on_change=transitions,
    )
    for model in ("iris", "held"):
        deployed = await swapper.deploy(model, "1")
        assert deployed.success, deployed.message
    transitions.seen.clear()
    return swapper


@pytest.fixture
async def swapper(fleet, replicas, transitions) -> ModelHotSwapper:
    return await serving(fleet, transitions)


async def infer(client: httpx.AsyncClient, replica: ReplicaProcess, model: str = "iris", body=None):
    body = body or {"inputs": [IRIS_ROW]}
    return await client.post(f"{replica.url}/v2/models/{model}/infer", json=body, timeout=60)


async def answering_versions(replicas: list[ReplicaProcess], count: int = 5) -> set[str]:
    async with httpx.AsyncClient() as client:
        answers = [await infer(client, r) for r in replicas for _ in range(count)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    return {a.json()["model_version"] for a in answers}


@dataclass
class Load:
    """Clients keeping many requests in flight against every replica until stopped."""

    replicas: list[ReplicaProcess]
    concurrency: int = 16
    answers: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Load:
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=self.concurrency))
        targets = itertools.cycle(self.replicas)
        self._workers = [
            asyncio.create_task(self._work(next(targets))) for _ in range(self.concurrency)
        ]
        await self.wait_for_answers(self.concurrency)
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        await asyncio.gather(*self._workers)
        await self._client.aclose()

    async def _work(self, replica: ReplicaProcess) -> None:
        while not self._stop.is_set():
            try:
                response = await infer(self._client, replica)
            except httpx.HTTPError as exc:
                self.failures.append(f"{replica.replica_id}: {exc!r}")
                continue
            if response.status_code == 200:
                self.answers.append(response.json()["model_version"])
            else:
                self.failures.append(
                    f"{replica.replica_id}: {response.status_code} {response.text}"
                )

    async def wait_for_answers(self, more: int) -> None:
        target = len(self.answers) + more
        async with asyncio.timeout(30):
            while len(self.answers) < target and not self.failures:
                await asyncio.sleep(0.01)


async def test_swaps_and_rollbacks_under_load_fail_no_request(swapper, replicas):
    async with Load(replicas) as load:
        for _ in range(3):
            assert (await swapper.swap_version("iris", "1", "2")).success
            await load.wait_for_answers(20)
            assert (await swapper.rollback_version("iris", "1")).success
            await load.wait_for_answers(20)

    assert load.failures == []
    assert set(load.answers) == {"1", "2"}


async def test_after_a_swap_every_replica_answers_with_the_new_version(swapper, replicas):
    await swapper.swap_version("iris", "1", "2")

    assert await answering_versions(replicas) == {"2"}


async def test_after_a_rollback_every_replica_answers_with_the_old_version(swapper, replicas):
    await swapper.swap_version("iris", "1", "2")

    await swapper.rollback_version("iris", "1")

    assert await answering_versions(replicas) == {"1"}


async def test_the_flip_returns_once_every_replica_applied_the_new_epoch(swapper, fleet):
    await swapper.swap_version("iris", "1", "2")

    epoch = await fleet.router.epoch("iris")
    reports = await fleet.replicas()
    assert [r.epochs["iris"] for r in reports] == [epoch, epoch]
    assert [r.routes["iris"] for r in reports] == ["2", "2"]


async def test_a_request_running_at_the_flip_finishes_on_the_old_version(
    swapper, fleet, replicas, transitions, redis_url, redis_namespace
):
    gate = Gate(redis_url, redis_namespace)
    async with httpx.AsyncClient() as client:
        held = asyncio.create_task(infer(client, replicas[0], "held", gate.body()))
        await until(lambda: fleet.inflight.pending("held", "1"), equals=1)
        swap = asyncio.create_task(swapper.swap_version("held", "1", "2"))
        draining = await transitions.wait_for(SwapState.DRAINING, timeout=30)
        meanwhile = await infer(client, replicas[0], "held", quick_request())
        assert not swap.done()  # the drain waits for the held request
        gate.release()
        finished = await held
        result = await swap

    assert draining.pending_requests == 1
    assert meanwhile.json()["model_version"] == "2"
    assert finished.status_code == 200
    assert finished.json()["model_version"] == "1"
    assert (result.requests_drained, result.requests_remaining) == (1, 0)


async def test_killing_a_replica_mid_drain_does_not_hang_the_swap(
    swapper, fleet, replicas, transitions, redis_url, redis_namespace
):
    doomed, survivor = replicas
    gate = Gate(redis_url, redis_namespace)  # never released: only the kill ends the request
    async with httpx.AsyncClient() as client:
        held = asyncio.create_task(infer(client, doomed, "held", gate.body()))
        await until(lambda: fleet.inflight.pending("held", "1"), equals=1)
        swap = asyncio.create_task(swapper.swap_version("held", "1", "2"))
        await transitions.wait_for(SwapState.DRAINING, timeout=30)
        doomed.kill()
        async with asyncio.timeout(15):  # a deadline, far below the 60 s drain timeout
            result = await swap
        with pytest.raises(httpx.TransportError):
            await held

    assert result.success
    assert result.requests_remaining == 0
    assert [r.replica_id for r in await fleet.replicas()] == [survivor.replica_id]
    assert await answering_versions([survivor]) == {"1"}  # iris untouched


async def test_the_left_version_unloads_from_every_replica_after_keep_warm(swapper, fleet):
    swapper.policy = SwapPolicy(drain_timeout=10, keep_warm=0)

    await swapper.swap_version("iris", "1", "2")

    await until(lambda: loaded_anywhere(fleet, "iris"), equals={"2"})
    assert not await fleet.versions.is_loaded("iris", "1")


async def test_an_unhealthy_target_is_refused_on_the_fleet_and_routing_stays(swapper, replicas):
    with pytest.raises(UnhealthyVersion) as refused:
        await swapper.swap_version("iris", "1", "3")

    assert "shape" in refused.value.health.reason
    assert refused.value.health.replica in {r.replica_id for r in replicas}
    assert await answering_versions(replicas) == {"1"}


async def test_a_replica_that_joins_later_serves_the_active_version(
    swapper, fleet, redis_url, redis_namespace, tmp_path
):
    await swapper.swap_version("iris", "1", "2")

    late = start_replica(namespace=redis_namespace, redis_url=redis_url, log_dir=tmp_path)
    try:
        await until(lambda: ready(late), equals=True)
        assert await answering_versions([late]) == {"2"}
    finally:
        late.stop()


async def test_load_without_any_live_replica_fails_clearly(fleet):
    with pytest.raises(FleetUnavailable, match="no live replica"):
        await fleet.versions.load("iris", "1")


@dataclass
class PrivateFleet:
    """A fleet on a redis-server of its own, which a test may kill and restart."""

    redis_server: RedisProcess
    fleet: Fleet
    replicas: list[ReplicaProcess]
    swapper: ModelHotSwapper


@pytest.fixture
async def private_fleet(fleet_specs, redis_namespace, tmp_path, transitions):
    redis_server = start_redis(tmp_path)
    fleet = await make_fleet(redis_server.url, redis_namespace, fleet_specs)
    replicas = start_replicas(
        2, namespace=redis_namespace, redis_url=redis_server.url, log_dir=tmp_path
    )
    private = PrivateFleet(redis_server, fleet, replicas, await serving(fleet, transitions))
    yield private
    for replica in replicas:
        replica.stop()
    private.redis_server.kill()
    await fleet.redis.aclose()


async def test_swap_fails_cleanly_when_redis_goes_away_and_replicas_keep_serving(
    private_fleet,
):
    private_fleet.redis_server.kill()

    async with asyncio.timeout(15):
        with pytest.raises(FleetUnavailable, match="cannot be reached"):
            await private_fleet.swapper.swap_version("iris", "1", "2")

    assert await answering_versions(private_fleet.replicas) == {"1"}


async def test_replicas_keep_routes_when_redis_restarts_empty_until_republished(
    private_fleet, fleet_specs, tmp_path
):
    fleet, replicas, swapper = private_fleet.fleet, private_fleet.replicas, private_fleet.swapper
    await swapper.swap_version("iris", "1", "2")
    private_fleet.redis_server.kill()
    private_fleet.redis_server = start_redis(tmp_path, port=private_fleet.redis_server.port)
    await until(lambda: live_count(fleet), equals=2)  # they registered again
    assert await fleet.is_empty()
    assert await answering_versions(replicas) == {"2"}

    await fleet.republish(
        specs=fleet_specs, routes={"iris": ("2", ["1", "2"]), "held": ("1", ["1"])}
    )
    result = await swapper.rollback_version("iris", "1")

    assert result.success
    assert await answering_versions(replicas) == {"1"}


# -- helpers --------------------------------------------------------------------------------


async def until(probe, *, equals, timeout: float = 30.0):
    """Wait for an async (or plain) probe to return `equals`; fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while True:
            value = probe()
            if asyncio.iscoroutine(value):
                value = await value
            if value == equals:
                return value
            await asyncio.sleep(0.02)


async def ready(replica: ReplicaProcess) -> bool:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{replica.url}/v2/health/ready")
    return response.status_code == 200


async def loaded_anywhere(fleet: Fleet, model_id: str) -> set[str]:
    return {v for r in await fleet.replicas() for v in r.loaded.get(model_id, ())}


async def live_count(fleet: Fleet) -> int:
    return len(await fleet.replicas())


async def test_a_replica_that_never_applies_a_flip_fails_it_and_the_route_is_restored(
    redis_url, redis_namespace, fleet_specs
):
    fleet = await make_fleet(redis_url, redis_namespace, fleet_specs)
    fleet.ack_timeout = fleet.heartbeat_ttl = 0.5
    heartbeat = asyncio.create_task(heartbeat_without_acks(fleet, "deaf-replica"))
    try:
        await until(lambda: live_count(fleet), equals=1)
        await fleet.republish(specs=[], routes={"iris": ("1", ["1"])})  # no ack awaited

        with pytest.raises(FleetUnavailable, match="replica deaf-replica did not apply") as failed:
            await fleet.router.flip("iris", "2")

        assert failed.value.message.endswith("the route was restored to version 1")
        assert await fleet.router.active("iris") == "1"
    finally:
        heartbeat.cancel()
        await fleet.redis.aclose()


async def heartbeat_without_acks(fleet: Fleet, replica_id: str) -> None:
    """A replica that is alive (it heartbeats) but applies no route: its epochs stay put."""
    now = utcnow()
    report = ReplicaReport(replica_id, "", 0, now, now, incarnation="")
    while True:
        await fleet.redis.set(fleet.keys.report(replica_id), report.to_json(), px=1000)
        await fleet.redis.sadd(fleet.keys.replicas, replica_id)
        await asyncio.sleep(0.1)
