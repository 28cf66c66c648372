"""The serving path under swaps: every request answered, none by the old version after."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from swaps.engine.errors import NotServing, UnknownModel

from .conftest import MODEL, infer


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
