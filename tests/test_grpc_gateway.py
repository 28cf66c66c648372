"""The V2 protocol over gRPC on real replica processes, as Triton's client uses it.

Two replicas (`grpc_fleet`) serve iris 1 (active), iris 2 (loaded, reachable pinned),
iris 3 (registered, not loaded), `echo` (fails on a negative value) and `held` over
REST and gRPC. The engine runs in this process for the swap under load; the last test
stops a replica to watch it drain.

This process talks gRPC with tritonclient's own messages only: it never imports
swaps.grpc_gateway (both register the `inference` protobuf package; see
swaps/v2_grpc/__init__.py).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from swaps.engine.fleet import Fleet
from swaps.engine.hotswapper import SwapPolicy

from .fleet_models import Gate, gated_spec
from .processes import (
    ReplicaProcess,
    deploy,
    drop_namespace,
    fleet_seal,
    free_port,
    spawn_replica,
    wait_until,
)
from .serving_models import FAILURE, echo_spec

pytestmark = pytest.mark.fleet

IRIS_ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)  # a setosa: class 0
MAX_BODY_BYTES = 64 * 1024
CONCURRENCY = 32


@dataclass
class GrpcReplica:
    process: ReplicaProcess
    grpc_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@dataclass
class GrpcFleet:
    namespace: str
    redis_url: str
    replicas: list[GrpcReplica]


def spawn_grpc_replica(**options) -> GrpcReplica:
    port = free_port()
    process = spawn_replica(**options, args=("--grpc-port", str(port)))
    return GrpcReplica(process, port)


@pytest.fixture(scope="module")
def grpc_fleet(redis_url, iris_specs, tmp_path_factory) -> Iterator[GrpcFleet]:
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    options = {
        "namespace": namespace,
        "redis_url": redis_url,
        "log_dir": tmp_path_factory.mktemp("grpc"),
        "env": {"HOTSWAP_MAX_BODY_BYTES": str(MAX_BODY_BYTES)},
    }
    replicas = [spawn_grpc_replica(**options) for _ in range(2)]
    try:
        for replica in replicas:
            replica.process.wait_live()
        iris = {**iris_specs, "2": replace(iris_specs["2"], outputs=())}
        deploy(
            redis_url,
            namespace,
            [*iris.values(), echo_spec(), gated_spec()],
            routes={"iris": "1", "echo": "1", "held": "1"},
            warm=(("iris", "2"),),
        )
        for replica in replicas:
            wait_until(
                lambda r=replica: serving(r) == health_pb2.HealthCheckResponse.SERVING,
                timeout=60,
                what="the replica's gRPC health to say SERVING",
            )
        yield GrpcFleet(namespace, redis_url, replicas)
    finally:
        for replica in replicas:
            replica.process.stop()
        drop_namespace(redis_url, namespace)


@pytest.fixture(scope="module")
def replica(grpc_fleet) -> GrpcReplica:
    return grpc_fleet.replicas[0]


@pytest.fixture(scope="module")
def client(replica) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=replica.target)
    yield client
    client.close()


def serving(replica: GrpcReplica, service: str = "") -> int | None:
    """The replica's grpc.health.v1 status, or None when it does not answer."""
    with grpc.insecure_channel(replica.target) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError:
            return None
    return answer.status


def iris_input(row: np.ndarray = IRIS_ROW) -> triton.InferInput:
    tensor = triton.InferInput("input-0", list(row.shape), "FP32")
    tensor.set_data_from_numpy(row)
    return tensor


def echo_input(value: float) -> triton.InferInput:
    tensor = triton.InferInput("input-0", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.float32))
    return tensor


def refusal(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


# -- server and model metadata, health --------------------------------------------------------


def test_server_metadata_live_and_ready(client):
    metadata = client.get_server_metadata()

    assert metadata.name == "hotswap"
    assert "binary_tensor_data" in metadata.extensions
    assert client.is_server_live()
    assert client.is_server_ready()


def test_model_metadata_describes_the_active_version(client):
    metadata = client.get_model_metadata("iris")

    assert list(metadata.versions) == ["1", "2", "3"]
    assert metadata.platform == "sklearn"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("input-0", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype) for t in metadata.outputs] == [("label", "INT64")]


def test_model_ready_is_true_for_loaded_versions_and_false_for_one_not_loaded(client):
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "2")
    assert not client.is_model_ready("iris", "3")


def test_health_says_serving_for_the_server_and_the_inference_service(replica):
    assert serving(replica) == health_pb2.HealthCheckResponse.SERVING
    assert serving(replica, "inference.GRPCInferenceService") == (
        health_pb2.HealthCheckResponse.SERVING
    )


def test_a_replica_that_is_not_ready_says_not_serving(grpc_fleet, tmp_path):
    # Given another fleet key, it believes none of the fleet's routes: never ready.
    stranger = spawn_grpc_replica(
        namespace=grpc_fleet.namespace,
        redis_url=grpc_fleet.redis_url,
        log_dir=tmp_path,
        env={"HOTSWAP_FLEET_KEY": "another-fleet-key-0123456789-0123456789-0123"},
    )
    try:
        stranger.process.wait_live()
        status = wait_until(lambda: serving(stranger), timeout=30, what="a health answer")

        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with triton.InferenceServerClient(url=stranger.target) as client:
            assert not client.is_server_ready()
    finally:
        stranger.process.stop()


# -- inference --------------------------------------------------------------------------------


def test_raw_inference_is_answered_by_the_active_version_with_its_id(client):
    answer = client.infer("iris", [iris_input()], request_id="req-7")

    response = answer.get_response()
    assert (response.model_name, response.model_version, response.id) == ("iris", "1", "req-7")
    assert answer.as_numpy("label").tolist() == [0]


def test_pinned_inference_is_answered_by_the_pinned_version(client):
    answer = client.infer("iris", [iris_input()], model_version="2")

    assert answer.get_response().model_version == "2"
    assert answer.as_numpy("label").tolist() == [0]
    assert answer.as_numpy("probabilities").shape == (1, 3)


def test_a_batch_of_rows_gets_a_row_each(client):
    rows = np.repeat(IRIS_ROW, 3, axis=0)

    answer = client.infer("iris", [iris_input(rows)])

    assert answer.as_numpy("label").tolist() == [0, 0, 0]


def test_only_the_requested_outputs_come_back(client):
    wanted = [triton.InferRequestedOutput("probabilities")]

    answer = client.infer("iris", [iris_input()], model_version="2", outputs=wanted)

    assert [o.name for o in answer.get_response().outputs] == ["probabilities"]


def test_typed_contents_are_answered_with_typed_contents(replica):
    request = service_pb2.ModelInferRequest(model_name="iris", id="typed")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(IRIS_ROW.ravel().tolist())

    with grpc.insecure_channel(replica.target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, timeout=10)

    assert (response.model_version, response.id) == ("1", "typed")
    assert not response.raw_output_contents
    [label] = response.outputs
    assert (label.name, label.datatype, list(label.shape)) == ("label", "INT64", [1])
    assert list(label.contents.int64_contents) == [0]


# -- errors: the codes that match REST's statuses ---------------------------------------------


def test_an_unknown_model_or_version_is_not_found(client):
    assert refusal(lambda: client.infer("nope", [iris_input()])).status() == (
        "StatusCode.NOT_FOUND"
    )
    unknown_version = refusal(lambda: client.infer("iris", [iris_input()], model_version="9"))
    assert unknown_version.status() == "StatusCode.NOT_FOUND"
    assert "unknown version '9'" in unknown_version.message()
    assert refusal(lambda: client.get_model_metadata("nope")).status() == "StatusCode.NOT_FOUND"


def test_a_version_not_loaded_here_is_unavailable(client):
    refused = refusal(lambda: client.infer("iris", [iris_input()], model_version="3"))

    assert refused.status() == "StatusCode.UNAVAILABLE"
    assert "not loaded" in refused.message()


def test_inputs_the_model_does_not_take_are_invalid_arguments(client):
    wrong_shape = refusal(lambda: client.infer("iris", [iris_input(IRIS_ROW[:, :3])]))
    assert wrong_shape.status() == "StatusCode.INVALID_ARGUMENT"
    assert "has shape [1, 3]; the model takes [any, 4]" in wrong_shape.message()

    nan = refusal(lambda: client.infer("iris", [iris_input(IRIS_ROW * np.nan)]))
    assert nan.status() == "StatusCode.INVALID_ARGUMENT"
    assert "NaN" in nan.message()


def test_raw_contents_that_do_not_fill_the_shape_are_invalid(replica):
    request = service_pb2.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input-0", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(IRIS_ROW.tobytes())

    with grpc.insecure_channel(replica.target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "holds 8 values, but its data has 4" in caught.value.details()


def test_a_message_over_the_body_limit_is_resource_exhausted(client):
    rows = np.ones((MAX_BODY_BYTES // 16 + 1, 4), dtype=np.float32)

    assert refusal(lambda: client.infer("iris", [iris_input(rows)])).status() == (
        "StatusCode.RESOURCE_EXHAUSTED"
    )


def test_a_model_failure_is_internal_with_the_error(client):
    refused = refusal(lambda: client.infer("echo", [echo_input(-1)]))

    assert refused.status() == "StatusCode.INTERNAL"
    assert FAILURE in refused.message()
    assert client.infer("echo", [echo_input(2)]).as_numpy("output-0").tolist() == [[2.0]]


def test_grpc_requests_are_counted_with_rest_requests(client, replica):
    def served() -> float:
        text = httpx.get(f"{replica.process.url}/metrics").text
        line = 'hotswap_inference_requests_total{code="200",model="echo",version="1"}'
        return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)), 0)

    before = served()
    client.infer("echo", [echo_input(1)])
    httpx.post(
        f"{replica.process.url}/v2/models/echo/infer",
        json={"inputs": [{"name": "in", "shape": [1, 1], "datatype": "FP32", "data": [1]}]},
    )

    assert served() == before + 2


# -- swaps under gRPC load --------------------------------------------------------------------


@dataclass
class GrpcLoad:
    """CONCURRENCY tritonclient.grpc.aio callers over the replicas until stopped; each
    answer recorded with when its request was sent."""

    replicas: list[GrpcReplica]
    model: str
    answers: list[tuple[float, float, str]] = field(default_factory=list)  # sent, answered
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> GrpcLoad:
        self._clients = [triton_aio.InferenceServerClient(url=r.target) for r in self.replicas]
        targets = itertools.cycle(self._clients)
        self._workers = [asyncio.create_task(self._work(next(targets))) for _ in range(CONCURRENCY)]
        await self.wait_for_answers(CONCURRENCY)
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        await asyncio.gather(*self._workers)
        for client in self._clients:
            await client.close()

    async def _work(self, client: triton_aio.InferenceServerClient) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                answer = await client.infer(self.model, [iris_input()], client_timeout=30)
            except InferenceServerException as exc:
                self.failures.append(f"{exc.status()}: {exc.message()}")
                continue
            if answer.as_numpy("label").tolist() != [0]:
                self.failures.append(f"wrong answer {answer.as_numpy('label')}")
            version = answer.get_response().model_version
            self.answers.append((sent, time.monotonic(), version))

    async def wait_for_answers(self, more: int) -> None:
        target = len(self.answers) + more
        async with asyncio.timeout(30):
            while len(self.answers) < target and not self.failures:
                await asyncio.sleep(0.01)

    def versions(self, *, sent_after: float = 0.0, answered_before: float = np.inf) -> set[str]:
        return {
            v
            for sent, answered, v in self.answers
            if sent_after < sent and answered < answered_before
        }


async def test_a_swap_and_a_rollback_under_grpc_load_fail_no_request(grpc_fleet, iris_specs):
    model = f"iris-{uuid.uuid4().hex[:8]}"
    fleet = Fleet.from_url(
        grpc_fleet.redis_url,
        namespace=grpc_fleet.namespace,
        seal=fleet_seal(),
        heartbeat_ttl=2.5,
        ack_timeout=30.0,
        load_timeout=90.0,
    )
    try:
        for version in ("1", "2"):
            await fleet.publish_spec(replace(iris_specs[version], model_id=model))
        swapper = fleet.swapper(policy=SwapPolicy(drain_timeout=60, keep_warm=60))
        assert (await swapper.deploy(model, "1")).success
        async with GrpcLoad(grpc_fleet.replicas, model) as load:
            swapped = await swapper.swap_version(model, "1", "2")
            flipped_to_2 = time.monotonic()
            await load.wait_for_answers(2 * CONCURRENCY)
            rolling_back = time.monotonic()
            rolled_back = await swapper.rollback_version(model, "1")
            flipped_to_1 = time.monotonic()
            await load.wait_for_answers(2 * CONCURRENCY)
    finally:
        await fleet.redis.aclose()

    assert swapped.success and rolled_back.success, (swapped.message, rolled_back.message)
    assert load.failures == []
    assert load.versions() == {"1", "2"}
    # Sent once the flip returned (every replica applied it), answered by the new version.
    assert load.versions(sent_after=flipped_to_2, answered_before=rolling_back) == {"2"}
    assert load.versions(sent_after=flipped_to_1) == {"1"}


# -- the last test: it stops a replica --------------------------------------------------------


def test_a_stopping_replica_says_not_serving_and_finishes_what_it_runs(grpc_fleet):
    replica = grpc_fleet.replicas[1]
    gate = Gate(grpc_fleet.redis_url, grpc_fleet.namespace)
    held: dict = {}

    def send_held() -> None:
        with triton.InferenceServerClient(url=replica.target) as client:
            try:
                held["answer"] = client.infer("held", [echo_input(gate.name)], client_timeout=60)
            except InferenceServerException as exc:
                held["error"] = exc

    sender = threading.Thread(target=send_held, daemon=True)
    sender.start()
    wait_until_logged(
        replica,
        lambda: in_flight(replica, "held") == 1,
        timeout=30,
        what="the held request in flight",
    )

    replica.process.popen.terminate()
    status = wait_until_logged(
        replica,
        lambda: serving(replica) == health_pb2.HealthCheckResponse.NOT_SERVING,
        timeout=30,
        what="NOT_SERVING while draining",
    )
    with triton.InferenceServerClient(url=replica.target) as client:
        refused = refusal(lambda: client.infer("iris", [iris_input()]))
    gate.release()
    sender.join(60)
    replica.process.popen.wait(30)

    log = replica.process.log()
    assert status
    assert refused.status() == "StatusCode.UNAVAILABLE", (refused, log)
    assert "error" not in held, (held.get("error"), log)
    assert held["answer"].as_numpy("output-0").tolist() == [[float(gate.name)]]


def wait_until_logged(replica: GrpcReplica, condition, **options):
    """wait_until, failing with the replica's log."""
    try:
        return wait_until(condition, **options)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; the replica's log:\n{replica.process.log()}") from None


def in_flight(replica: GrpcReplica, model: str) -> float:
    text = httpx.get(f"{replica.process.url}/metrics").text
    prefix = f'hotswap_inference_in_flight{{model="{model}",version="1"}}'
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(prefix)), 0)
