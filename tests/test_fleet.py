"""Swaps across a real fleet: Redis, two replica processes, the engine on Fleet ports.

The engine runs in the test process; the replicas are `python -m swaps.replica`
subprocesses on their own ports, loading the demo iris models for real inference.
Two replicas serve the whole module (`shared_fleet`), each test on model names of its
own (`models`); a test that kills or must count replicas gets a fleet of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import httpx
import pytest

from swaps.engine.artifacts import digest_of
from swaps.engine.errors import (
    FleetUnavailable,
    IncompatibleVersion,
    SwapError,
    UnhealthyVersion,
)
from swaps.engine.fleet import Fleet
from swaps.engine.fleet_versions import WARM_MARGIN
from swaps.engine.hotswapper import WARM, ModelHotSwapper, SwapPolicy
from swaps.engine.reports import ReplicaReport, sealed_report
from swaps.engine.results import SwapState, utcnow
from tests.engine.conftest import Transitions
from tests.fleet_models import Gate, gated_spec

from .processes import (
    RedisProcess,
    ReplicaProcess,
    drop_namespace,
    fleet_seal,
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


@dataclass(frozen=True)
class Models:
    """This test's own model names: tests share replicas, never a model."""

    iris: str
    held: str


@pytest.fixture
def models() -> Models:
    suffix = uuid.uuid4().hex[:8]
    return Models(iris=f"iris-{suffix}", held=f"held-{suffix}")


@pytest.fixture
def fleet_specs(iris_specs, models):
    iris = [replace(spec, model_id=models.iris) for spec in iris_specs.values()]
    # Iris 4 is iris 1 answering under another output name: it would break clients.
    renamed = (replace(iris_specs["1"].outputs[0], name="predict"),)
    iris.append(replace(iris[0], version="4", outputs=renamed))
    # Iris 5's artifact is gone: no replica can load it.
    iris.append(replace(iris[0], version="5", artifact="/nonexistent/iris-5.joblib"))
    held = [gated_spec(model_id=models.held, version=v) for v in ("1", "2")]
    return [*iris, *held]


async def make_fleet(redis_url: str, namespace: str, specs) -> Fleet:
    fleet = Fleet.from_url(
        redis_url,
        namespace=namespace,
        seal=fleet_seal(),
        heartbeat_ttl=HEARTBEAT_TTL,
        # Generous: on a loaded 2-core CI machine a replica can take seconds to ack.
        ack_timeout=30.0,
        load_timeout=90.0,
    )
    for spec in specs:
        await fleet.publish_spec(spec)
    return fleet


@dataclass
class SharedFleet:
    """Two replicas on a namespace of this module's, shared by the tests that kill none."""

    namespace: str
    replicas: list[ReplicaProcess]


@pytest.fixture(scope="module")
def shared_fleet(redis_url, tmp_path_factory) -> Iterator[SharedFleet]:
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    started = start_replicas(
        2, namespace=namespace, redis_url=redis_url, log_dir=tmp_path_factory.mktemp("fleet")
    )
    yield SharedFleet(namespace, started)
    for replica in started:
        replica.stop()
    drop_namespace(redis_url, namespace)


@pytest.fixture
async def fleet(redis_url, shared_fleet, fleet_specs):
    fleet = await make_fleet(redis_url, shared_fleet.namespace, fleet_specs)
    yield fleet
    await fleet.redis.aclose()


@pytest.fixture
def replicas(shared_fleet) -> list[ReplicaProcess]:
    for replica in shared_fleet.replicas:
        assert replica.alive(), f"a shared replica died:\n{replica.log()}"
    return shared_fleet.replicas


@pytest.fixture
async def own_fleet(redis_url, redis_namespace, fleet_specs):
    """A fleet on this test's own namespace, for a test that kills or adds replicas."""
    fleet = await make_fleet(redis_url, redis_namespace, fleet_specs)
    yield fleet
    await fleet.redis.aclose()


@pytest.fixture
def own_replicas(own_fleet, redis_url, redis_namespace, tmp_path):
    started = start_replicas(2, namespace=redis_namespace, redis_url=redis_url, log_dir=tmp_path)
    yield started
    for replica in started:
        replica.stop()


@pytest.fixture
def transitions() -> Transitions:
    return Transitions()


async def serving(fleet: Fleet, transitions: Transitions, models: Models) -> ModelHotSwapper:
    swapper = fleet.swapper(
        policy=SwapPolicy(drain_timeout=60, keep_warm=60, status_interval=0.05),
        on_change=transitions,
    )
    for model in (models.iris, models.held):
        deployed = await swapper.deploy(model, "1")
        assert deployed.success, deployed.message
    transitions.seen.clear()
    return swapper


@pytest.fixture
async def swapper(fleet, replicas, transitions, models) -> ModelHotSwapper:
    return await serving(fleet, transitions, models)


@pytest.fixture
async def own_swapper(own_fleet, own_replicas, transitions, models) -> ModelHotSwapper:
    return await serving(own_fleet, transitions, models)


async def infer(client: httpx.AsyncClient, replica: ReplicaProcess, model: str, body=None):
    body = body or {"inputs": [IRIS_ROW]}
    return await client.post(f"{replica.url}/v2/models/{model}/infer", json=body, timeout=60)


async def answering_versions(
    replicas: list[ReplicaProcess], model: str, count: int = 5
) -> set[str]:
    async with httpx.AsyncClient() as client:
        answers = [await infer(client, r, model) for r in replicas for _ in range(count)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    return {a.json()["model_version"] for a in answers}


@dataclass
class Load:
    """Clients keeping many requests in flight against every replica until stopped."""

    replicas: list[ReplicaProcess]
    model: str
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
                response = await infer(self._client, replica, self.model)
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


async def test_swaps_and_rollbacks_under_load_fail_no_request(models, swapper, replicas):
    async with Load(replicas, models.iris) as load:
        for _ in range(3):
            assert (await swapper.swap_version(models.iris, "1", "2")).success
            await load.wait_for_answers(20)
            assert (await swapper.rollback_version(models.iris, "1")).success
            await load.wait_for_answers(20)

    assert load.failures == []
    assert set(load.answers) == {"1", "2"}


async def test_after_a_swap_every_replica_answers_with_the_new_version(models, swapper, replicas):
    await swapper.swap_version(models.iris, "1", "2")

    assert await answering_versions(replicas, models.iris) == {"2"}


async def test_after_a_rollback_every_replica_answers_with_the_old_version(
    models, swapper, replicas
):
    await swapper.swap_version(models.iris, "1", "2")

    await swapper.rollback_version(models.iris, "1")

    assert await answering_versions(replicas, models.iris) == {"1"}


def answered(reports: list[ReplicaReport], model: str, version: str) -> list[int]:
    """The load request each replica's last check of the version answered."""
    return [r.answered[model][version] for r in reports]


async def test_a_rollback_to_a_warm_version_checks_it_on_no_replica_again(
    models, swapper, fleet, replicas, transitions
):
    await swapper.swap_version(models.iris, "1", "2")
    checked = answered(await fleet.replicas(), models.iris, "1")
    transitions.seen.clear()

    await swapper.rollback_version(models.iris, "1")

    assert answered(await fleet.replicas(), models.iris, "1") == checked
    draining = await transitions.wait_for(SwapState.DRAINING)
    assert f"rolled back to version 1 ({WARM})" in draining.message
    assert await answering_versions(replicas, models.iris) == {"1"}


async def test_a_rollback_to_a_version_about_to_unload_loads_and_checks_it_again(
    models, swapper, fleet, replicas, transitions
):
    swapper.policy = SwapPolicy(drain_timeout=10, keep_warm=WARM_MARGIN / 2)
    await swapper.swap_version(models.iris, "1", "2")
    checked = answered(await fleet.replicas(), models.iris, "1")
    transitions.seen.clear()

    await swapper.rollback_version(models.iris, "1")

    again = answered(await fleet.replicas(), models.iris, "1")
    assert all(now > before for now, before in zip(again, checked, strict=True))
    draining = await transitions.wait_for(SwapState.DRAINING)
    assert WARM not in draining.message
    assert await answering_versions(replicas, models.iris) == {"1"}


async def test_the_flip_returns_once_every_replica_applied_the_new_epoch(models, swapper, fleet):
    await swapper.swap_version(models.iris, "1", "2")

    epoch = await fleet.router.epoch(models.iris)
    reports = await fleet.replicas()
    assert [r.epochs[models.iris] for r in reports] == [epoch, epoch]
    assert [r.routes[models.iris] for r in reports] == ["2", "2"]


async def test_a_request_running_at_the_flip_finishes_on_the_old_version(
    models, swapper, fleet, replicas, transitions, redis_url, shared_fleet
):
    gate = Gate(redis_url, shared_fleet.namespace)
    async with httpx.AsyncClient() as client:
        held = asyncio.create_task(infer(client, replicas[0], models.held, gate.body()))
        await until(lambda: fleet.inflight.pending(models.held, "1"), equals=1)
        swap = asyncio.create_task(swapper.swap_version(models.held, "1", "2"))
        draining = await transitions.wait_for(SwapState.DRAINING, timeout=30)
        meanwhile = await infer(client, replicas[0], models.held, quick_request())
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
    models, own_swapper, own_fleet, own_replicas, transitions, redis_url, redis_namespace
):
    swapper, fleet = own_swapper, own_fleet
    doomed, survivor = own_replicas
    gate = Gate(redis_url, redis_namespace)  # never released: only the kill ends the request
    async with httpx.AsyncClient() as client:
        held = asyncio.create_task(infer(client, doomed, models.held, gate.body()))
        await until(lambda: fleet.inflight.pending(models.held, "1"), equals=1)
        swap = asyncio.create_task(swapper.swap_version(models.held, "1", "2"))
        await transitions.wait_for(SwapState.DRAINING, timeout=30)
        doomed.kill()
        async with asyncio.timeout(15):  # a deadline, far below the 60 s drain timeout
            result = await swap
        with pytest.raises(httpx.TransportError):
            await held

    assert result.success
    assert result.requests_remaining == 0
    assert [r.replica_id for r in await fleet.replicas()] == [survivor.replica_id]
    assert await answering_versions([survivor], models.iris) == {"1"}  # iris untouched


async def test_the_left_version_unloads_from_every_replica_after_keep_warm(models, swapper, fleet):
    swapper.policy = SwapPolicy(drain_timeout=10, keep_warm=0)

    await swapper.swap_version(models.iris, "1", "2")

    await until(lambda: loaded_anywhere(fleet, models.iris), equals={"2"})
    assert not await fleet.versions.is_loaded(models.iris, "1")


async def test_an_unhealthy_target_is_refused_on_the_fleet_and_routing_stays(
    models, swapper, replicas
):
    with pytest.raises(UnhealthyVersion) as refused:
        await swapper.swap_version(models.iris, "1", "3")

    assert "shape" in refused.value.health.reason
    assert refused.value.health.replica in {r.replica_id for r in replicas}
    assert await answering_versions(replicas, models.iris) == {"1"}


async def test_a_swap_that_would_break_clients_is_refused_on_the_fleet_naming_why(
    models, swapper, replicas
):
    with pytest.raises(IncompatibleVersion) as refused:
        await swapper.swap_version(models.iris, "1", "4")

    assert refused.value.problems == [
        "output 'label', which clients read, is not one it gives (it gives 'predict')"
    ]
    assert await answering_versions(replicas, models.iris) == {"1"}


async def test_a_replica_that_reports_in_before_loading_anything_is_no_judge_of_a_version(
    models, swapper, fleet, replicas
):
    # A replica started again mid-swap reports before it has loaded what the fleet wants:
    # the checks between the load and the flip must not take it for a failed replica.
    before = await fleet.versions.signature(models.iris, "1")
    joining = asyncio.create_task(heartbeat_without_acks(fleet, "replica-joining"))
    try:
        await until(lambda: fleet_size(fleet), equals=len(replicas) + 1)

        health = await fleet.versions.check_health(models.iris, "1")
        described = await fleet.versions.signature(models.iris, "1")
    finally:
        joining.cancel()

    assert health.healthy, health.reason
    assert before is not None
    assert described == before


async def fleet_size(fleet: Fleet) -> int:
    return len(await fleet.replicas())


async def test_a_refused_targets_failed_check_stays_reported_once_it_is_unloaded(
    models, swapper, fleet, replicas
):
    with pytest.raises(UnhealthyVersion):
        await swapper.swap_version(models.iris, "1", "3")

    await until(lambda: loaded_anywhere(fleet, models.iris), equals={"1"})
    reports = await fleet.replicas()
    checks = [r.health_of(models.iris, "3") for r in reports]
    assert all(check is not None and not check.healthy for check in checks)
    assert all("shape" in check.reason for check in checks)


async def test_a_target_that_cannot_load_is_reported_with_why_on_every_replica(
    models, swapper, fleet
):
    with pytest.raises(SwapError):
        await swapper.swap_version(models.iris, "1", "5")

    # The swap fails at the first replica's answer; the other answers a moment later.
    async def failed_checks() -> int:
        checks = [r.health_of(models.iris, "5") for r in await fleet.replicas()]
        return sum(1 for c in checks if c and not c.healthy and "does not exist" in c.reason)

    await until(failed_checks, equals=2)


async def test_a_target_whose_file_changed_after_registration_fails_naming_both_digests(
    models, swapper, fleet, replicas, iris_specs, tmp_path
):
    artifact = tmp_path / "iris-6.joblib"
    shutil.copy(iris_specs["1"].artifact, artifact)
    pinned = replace(
        iris_specs["1"],
        model_id=models.iris,
        version="6",
        artifact=str(artifact),
        artifact_digest=digest_of(artifact),
    )
    await fleet.publish_spec(pinned)
    with artifact.open("ab") as changed:
        changed.write(b"\0")  # a pickle ends at its STOP: without the check it would load
    named = f"has digest {digest_of(artifact)}, expected {pinned.artifact_digest}"

    with pytest.raises(SwapError) as failure:
        await swapper.swap_version(models.iris, "1", "6")

    assert "version '6'" in failure.value.message
    assert named in failure.value.message
    assert await answering_versions(replicas, models.iris) == {"1"}

    async def failed_checks() -> int:
        checks = [r.health_of(models.iris, "6") for r in await fleet.replicas()]
        return sum(1 for c in checks if c and not c.healthy and named in c.reason)

    await until(failed_checks, equals=2)
    assert "6" not in await loaded_anywhere(fleet, models.iris)


async def test_a_replica_that_joins_later_serves_the_active_version(
    models, own_swapper, redis_url, redis_namespace, tmp_path
):
    # A fleet of its own: on the shared one, the newcomer would first load every model
    # of the module's earlier tests before it is ready.
    await own_swapper.swap_version(models.iris, "1", "2")

    late = start_replica(namespace=redis_namespace, redis_url=redis_url, log_dir=tmp_path)
    try:
        await until(lambda: ready(late), equals=True)
        assert await answering_versions([late], models.iris) == {"2"}
    finally:
        late.stop()


async def test_load_without_any_live_replica_fails_clearly(models, own_fleet):
    with pytest.raises(FleetUnavailable, match="no live replica"):
        await own_fleet.versions.load(models.iris, "1")


@dataclass
class PrivateFleet:
    """A fleet on a redis-server of its own, which a test may kill and restart."""

    redis_server: RedisProcess
    fleet: Fleet
    replicas: list[ReplicaProcess]
    swapper: ModelHotSwapper


@pytest.fixture
async def private_fleet(fleet_specs, redis_namespace, tmp_path, transitions, models):
    redis_server = start_redis(tmp_path)
    fleet = await make_fleet(redis_server.url, redis_namespace, fleet_specs)
    replicas = start_replicas(
        2, namespace=redis_namespace, redis_url=redis_server.url, log_dir=tmp_path
    )
    private = PrivateFleet(redis_server, fleet, replicas, await serving(fleet, transitions, models))
    yield private
    for replica in replicas:
        replica.stop()
    private.redis_server.kill()
    await fleet.redis.aclose()


async def test_swap_fails_cleanly_when_redis_goes_away_and_replicas_keep_serving(
    models, private_fleet
):
    private_fleet.redis_server.kill()

    async with asyncio.timeout(15):
        with pytest.raises(FleetUnavailable, match="cannot be reached"):
            await private_fleet.swapper.swap_version(models.iris, "1", "2")

    assert await answering_versions(private_fleet.replicas, models.iris) == {"1"}


async def test_replicas_keep_routes_when_redis_restarts_empty_until_republished(
    models, private_fleet, fleet_specs, tmp_path
):
    fleet, replicas, swapper = private_fleet.fleet, private_fleet.replicas, private_fleet.swapper
    await swapper.swap_version(models.iris, "1", "2")
    private_fleet.redis_server.kill()
    private_fleet.redis_server = start_redis(tmp_path, port=private_fleet.redis_server.port)
    await until(lambda: live_count(fleet), equals=2)  # they registered again
    assert await fleet.is_empty()
    assert await answering_versions(replicas, models.iris) == {"2"}

    await fleet.republish(
        specs=fleet_specs, routes={models.iris: ("2", ["1", "2"]), models.held: ("1", ["1"])}
    )
    result = await swapper.rollback_version(models.iris, "1")

    assert result.success
    assert await answering_versions(replicas, models.iris) == {"1"}


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
    models, redis_url, redis_namespace, fleet_specs
):
    fleet = await make_fleet(redis_url, redis_namespace, fleet_specs)
    fleet.ack_timeout = fleet.heartbeat_ttl = 0.5
    heartbeat = asyncio.create_task(heartbeat_without_acks(fleet, "deaf-replica"))
    try:
        await until(lambda: live_count(fleet), equals=1)
        await fleet.republish(specs=[], routes={models.iris: ("1", ["1"])})  # no ack awaited

        with pytest.raises(FleetUnavailable, match="replica deaf-replica did not apply") as failed:
            await fleet.router.flip(models.iris, "2")

        assert failed.value.message.endswith("the route was restored to version 1")
        assert await fleet.router.active(models.iris) == "1"
    finally:
        heartbeat.cancel()
        await fleet.redis.aclose()


async def heartbeat_without_acks(fleet: Fleet, replica_id: str) -> None:
    """A replica that is alive (it heartbeats) but applies no route: its epochs stay put."""
    now = utcnow()
    report = ReplicaReport(replica_id, "", 0, now, now, incarnation="")
    while True:
        stored = sealed_report(fleet.seal, fleet.keys, report)
        await fleet.redis.set(fleet.keys.report(replica_id), stored, px=1000)
        await fleet.redis.sadd(fleet.keys.replicas, replica_id)
        await asyncio.sleep(0.1)
