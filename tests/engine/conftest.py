from __future__ import annotations

import asyncio

import numpy as np
import pytest

from swaps.engine.hotswapper import SwapPolicy
from swaps.engine.local import LocalStack, local_stack
from swaps.engine.results import SwapState, SwapStatus
from swaps.engine.spec import VersionSpec

from . import models

MODEL = "fraud"


def python_spec(version: str, factory: str = "gated", *, model_id: str = MODEL) -> VersionSpec:
    return VersionSpec(
        model_id=model_id,
        version=version,
        runtime="python",
        artifact=f"tests.engine.models:{factory}",
        sample_input=[[1.0, 2.0]],
        expected_output_shape=(-1, 2),
        expected_output_dtype="FP32",
        memory_limit_bytes=200 * 2**20,
    )


class Transitions:
    """Records every status the engine publishes and lets a test wait for a state."""

    def __init__(self) -> None:
        self.seen: list[SwapStatus] = []
        self._changed = asyncio.Event()

    def __call__(self, status: SwapStatus) -> None:
        self.seen.append(status)
        self._changed.set()

    @property
    def states(self) -> list[SwapState]:
        states = [s.state for s in self.seen]
        return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]

    async def wait_for(self, state: SwapState, timeout: float = 10) -> SwapStatus:
        async with asyncio.timeout(timeout):
            while True:
                for status in self.seen:
                    if status.state is state:
                        return status
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def gate():
    models.GATE.clear()
    while models.ENTERED.acquire(blocking=False):
        pass
    yield models.GATE
    models.GATE.set()  # never leave a test's request hanging


@pytest.fixture
def transitions() -> Transitions:
    return Transitions()


@pytest.fixture
def stack(transitions, gate) -> LocalStack:
    s = local_stack(
        [
            python_spec("1"),
            python_spec("2"),
            python_spec("3"),
            python_spec("broken", "wrong_shape"),
            python_spec("corrupt", "refuses_to_load"),
        ],
        policy=SwapPolicy(drain_timeout=10, keep_warm=60, status_interval=0.01),
        on_change=transitions,
    )
    return s


@pytest.fixture
async def serving_version(stack, transitions) -> str:
    await stack.swapper.deploy(MODEL, "1")
    transitions.seen.clear()
    return "1"


def held_request(stack: LocalStack, *, version: str | None = None):
    """Start a request that stays in flight until the gate opens; return its future."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(
        None,
        lambda: stack.dispatcher.infer(
            MODEL, {"input-0": np.array([[-1.0, 1.0]], dtype=np.float32)}, version=version
        ),
    )
    return future


async def wait_entered(count: int = 1) -> None:
    """Wait until `count` held requests have reached the gate (they are in flight)."""
    for _ in range(count):
        ok = await asyncio.to_thread(models.ENTERED.acquire, True, 10)
        assert ok, "a held request never reached the model"


def infer(stack: LocalStack, value: float = 1.0, *, version: str | None = None):
    return stack.dispatcher.infer(
        MODEL, {"input-0": np.array([[value, value]], dtype=np.float32)}, version=version
    )
