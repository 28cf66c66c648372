"""Adaptive batching on a real replica: merged requests, each answered with its own rows.

Batched versions here wait up to 10 s for a full batch, so every batch in these tests
is made by its size, never by a timer: the test sends exactly the requests that fill it.
`counting` answers each row with how many rows its batch had (tests/serving_models.py).
"""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import replace

import httpx
import numpy as np
import orjson
import pytest

from swaps.engine.health import probe
from swaps.engine.local import local_stack
from swaps.engine.runtimes import load
from swaps.inference import Inferencer
from swaps.v2_codec import decode_request

from .fleet_models import Gate, gated_spec
from .processes import ReplicaProcess, deploy, drop_namespace, start_replica, wait_until
from .serving_models import FAILURE, SUMMING_FACTORY, counting_spec, echo_spec

pytestmark = pytest.mark.fleet

BATCHED = {"max_batch_size": 4, "max_batch_delay_ms": 10_000}


@pytest.fixture(scope="module")
def replica(redis_url, tmp_path_factory) -> Iterator[ReplicaProcess]:
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    replica = start_replica(
        namespace=namespace, redis_url=redis_url, log_dir=tmp_path_factory.mktemp("batching")
    )
    pair = {"max_batch_size": 2, "max_batch_delay_ms": 10_000}
    specs = [
        counting_spec(**BATCHED),
        counting_spec(model_id="pair", **pair),
        counting_spec(model_id="pair", version="2", **pair),
        counting_spec(model_id="unbatched"),
        replace(gated_spec(), **pair),
    ]
    try:
        deploy(
            redis_url,
            namespace,
            specs,
            routes={"counting": "1", "pair": "1", "unbatched": "1", "held": "1"},
            warm=(("pair", "2"),),
        )
        yield replica
    finally:
        replica.stop()
        drop_namespace(redis_url, namespace)


def body(value: float, request_id: str) -> dict:
    row = {"name": "input-0", "shape": [1, 1], "datatype": "FP32", "data": [value]}
    return {"id": request_id, "inputs": [row]}


async def send(replica: ReplicaProcess, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """Every (path, body) at once, each on its own connection."""
    async with httpx.AsyncClient(base_url=replica.url, timeout=60) as client:
        return await asyncio.gather(*(client.post(path, json=b) for path, b in requests))


def rows_of_batch(answer: dict) -> int:
    return next(o for o in answer["outputs"] if o["name"] == "batch_rows")["data"][0]


async def test_requests_are_merged_and_each_answered_with_its_own_rows(replica):
    requests = [("/v2/models/counting/infer", body(n, f"req-{n}")) for n in range(4)]

    answers = [r.json() for r in await send(replica, requests)]

    assert [a["id"] for a in answers] == ["req-0", "req-1", "req-2", "req-3"]
    assert [a["outputs"][0]["data"] for a in answers] == [[0.0], [1.0], [2.0], [3.0]]
    assert [rows_of_batch(a) for a in answers] == [4, 4, 4, 4]
    assert {a["model_version"] for a in answers} == {"1"}


async def test_an_unbatched_version_runs_each_request_alone(replica):
    requests = [("/v2/models/unbatched/infer", body(n, f"u-{n}")) for n in range(4)]

    answers = [r.json() for r in await send(replica, requests)]

    assert [rows_of_batch(a) for a in answers] == [1, 1, 1, 1]


async def test_a_batch_never_mixes_versions(replica):
    requests = [
        (f"/v2/models/pair/versions/{version}/infer", body(n, f"{version}-{n}"))
        for n, version in enumerate(["1", "2", "1", "2"])
    ]

    answers = [r.json() for r in await send(replica, requests)]

    # Two of each version: each version's two make a batch of its own.
    assert [a["model_version"] for a in answers] == ["1", "2", "1", "2"]
    assert [rows_of_batch(a) for a in answers] == [2, 2, 2, 2]


async def test_a_model_failure_fails_only_the_requests_of_its_batch(replica):
    values = [1, 2, 3, 4, 5, 6, -7, 8]  # two batches of four; one holds the -7

    responses = await send(
        replica, [("/v2/models/counting/infer", body(v, f"f{v}")) for v in values]
    )

    failed = [v for v, r in zip(values, responses, strict=True) if r.status_code != 200]
    assert len(failed) == 4 and -7 in failed
    for response in responses:
        if response.status_code != 200:
            assert response.status_code == 500
            assert FAILURE in response.json()["error"]
        else:
            assert rows_of_batch(response.json()) == 4


def in_flight(replica: ReplicaProcess, model: str) -> float:
    text = httpx.get(f"{replica.url}/metrics").text
    prefix = f'hotswap_inference_in_flight{{model="{model}",version="1"}}'
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(prefix)), 0)


async def test_each_request_of_a_batch_is_counted_in_flight_on_its_own(replica):
    gate = Gate(replica.redis_url, replica.namespace)

    async def count_then_release() -> None:
        try:
            # The gated model holds each of its batch's two rows until one release each.
            await asyncio.to_thread(
                wait_until, lambda: in_flight(replica, "held") == 2, timeout=30, what="2 held"
            )
        finally:
            gate.release()
            gate.release()

    answers, _ = await asyncio.gather(
        send(replica, [("/v2/models/held/infer", gate.body()) for _ in range(2)]),
        count_then_release(),
    )

    assert [a.status_code for a in answers] == [200, 200]
    assert in_flight(replica, "held") == 0


def test_the_health_check_fails_a_batched_version_whose_outputs_do_not_split():
    batched = echo_spec(model_id="summing", artifact=SUMMING_FACTORY, **BATCHED)

    unbatched = probe(spec=replace(batched, max_batch_size=0), model=load(batched))
    checked = probe(spec=batched, model=load(batched))

    assert unbatched.healthy
    assert not checked.healthy
    assert "cannot be split by rows" in checked.reason


def test_the_health_check_passes_a_batched_version_whose_rows_split():
    spec = counting_spec(**BATCHED)

    assert probe(spec=spec, model=load(spec)).healthy


def test_batching_travels_with_the_version_spec():
    spec = counting_spec(**BATCHED)

    assert type(spec).from_dict(spec.as_dict()) == spec
    assert not replace(spec, max_batch_size=1).batching


def test_the_merged_rows_come_back_in_request_order():
    from swaps.engine.batching import merged, split

    parts = [{"x": np.array([[1.0], [2.0]])}, {"x": np.array([[3.0]])}]

    pieces = split({"y": merged(parts)["x"] * 10}, [2, 1])

    assert [p["y"].ravel().tolist() for p in pieces] == [[10.0, 20.0], [30.0]]


async def test_an_unloaded_batched_version_is_not_kept_in_memory_by_its_batcher():
    stack = local_stack([counting_spec(**BATCHED)])
    stack.versions.load_now("counting", "1")  # no future left holding the model
    await stack.router.flip("counting", "1")
    stack.ready = True
    inference = Inferencer(stack, threads=None, metrics=None)

    def infer(n: int):
        request = decode_request(orjson.dumps(body(n, f"req-{n}")))
        return inference.infer("counting", None, request, lambda _, outputs: outputs, started=0)

    answers = await asyncio.gather(*(infer(n) for n in range(BATCHED["max_batch_size"])))
    assert [int(a["batch_rows"][0, 0]) for a in answers] == [4, 4, 4, 4]  # one batch
    loaded = weakref.ref(stack.versions.loaded("counting", "1"))
    await stack.router.flip("counting", "2")  # nothing routes to it: it may go
    await stack.versions.unload("counting", "1")
    gc.collect()

    assert stack.versions.loaded("counting", "1") is None
    assert loaded() is None, "the batcher still holds the unloaded version's model"
