"""The serving path under swaps: every request answered, none by the old version after."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from swaps.engine.errors import NotServing, UnknownModel
from swaps.engine.inflight import CLIENT_ERROR, FAILED, SERVED, LocalInflight
from swaps.engine.spec import TensorSpec

from .conftest import MODEL, infer, python_spec


async def test_unpinned_request_is_answered_by_the_active_version(stack, serving_version):
    answer = infer(stack, 3.0)

    assert answer.version == "1"
    assert answer.outputs["output-0"].tolist() == [[6.0, 6.0]]


async def test_pinned_request_is_answered_by_the_pinned_version(stack, serving_version):
    await stack.versions.load(MODEL, "2")

    assert infer(stack, version="2").version == "2"


async def test_pinned_request_to_an_unloaded_version_is_refused(stack, serving_version):
    with pytest.raises(NotServing, match="not loaded"):
        infer(stack, version="3")


async def test_request_for_a_model_without_route_is_refused(stack):
    with pytest.raises(UnknownModel):
        infer(stack)


async def test_pinned_request_counts_against_its_version(stack, serving_version):
    await stack.versions.load(MODEL, "2")

    infer(stack, version="2")

    assert await stack.inflight.completed(MODEL, "2") == 1
    assert await stack.inflight.completed(MODEL, "1") == 0


async def test_requests_through_swaps_all_complete_and_none_reach_old_after(stack, serving_version):
    stop = threading.Event()
    swapped = threading.Event()
    answers: list[tuple[bool, str]] = []  # (started after the swap completed, version)
    errors: list[BaseException] = []

    def client() -> None:
        x = {"input-0": np.ones((1, 2), dtype=np.float32)}
        while not stop.is_set():
            after = swapped.is_set()
            try:
                answers.append((after, stack.dispatcher.infer(MODEL, x).version))
            except BaseException as exc:
                errors.append(exc)

    async def answered(count: int, *, after: bool) -> None:
        """Wait (with a deadline) until `count` answers came from requests on that side."""
        async with asyncio.timeout(30):
            while sum(1 for side, _ in answers if side is after) < count and not errors:
                await asyncio.sleep(0.001)

    with ThreadPoolExecutor(8) as pool:
        clients = [pool.submit(client) for _ in range(8)]
        await answered(50, after=False)
        result = await stack.swapper.swap_version(MODEL, "1", "2")
        swapped.set()
        await answered(50, after=True)
        stop.set()
        for c in clients:
            c.result()

    assert result.success
    assert not errors
    assert {v for _, v in answers} == {"1", "2"}
    assert all(v == "2" for after, v in answers if after)
    assert any(after for after, _ in answers)


def test_each_finished_request_is_counted_by_how_it_ended():
    inflight = LocalInflight()
    for outcome in (SERVED, SERVED, CLIENT_ERROR, FAILED):
        inflight.enter("m", "1")
        inflight.exit("m", "1", outcome)

    counts = inflight.snapshot()

    assert counts.completed == {("m", "1"): 4}  # what a drain counts
    assert counts.served == {("m", "1"): 2}
    assert (counts.client_errors, counts.model_failures) == ({("m", "1"): 1}, {("m", "1"): 1})


async def test_a_request_the_model_fails_is_counted_as_failed_not_served(stack, serving_version):
    outputs = (TensorSpec("output-0", "FP32", (-1, 2)),)  # else loading runs the sample
    stack.versions.register(replace(python_spec("failing", "fails_to_predict"), outputs=outputs))
    await stack.versions.load(MODEL, "failing")  # loaded without its (failing) check

    with pytest.raises(RuntimeError, match="fell over"):
        infer(stack, version="failing")

    counts = stack.inflight.snapshot()
    assert counts.model_failures == {(MODEL, "failing"): 1}
    assert counts.served.get((MODEL, "failing"), 0) == 0
