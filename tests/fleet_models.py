"""Light models that replica processes load in tests and benchmarks: numpy and redis only.

Replicas import them by factory path (`tests.fleet_models:gated`); they run with the
repository root on PYTHONPATH. Nothing here imports scikit-learn or ONNX Runtime, so a
replica that serves only these starts and loads them in a fraction of a second.

`gated` holds a request until the test releases it: a request whose input is a gate
number `n > 0` waits on the Redis list `{namespace}:gate:{n}` (the replica's own
REDIS_URL and HOTSWAP_NAMESPACE) until the test pushes to it with `Gate.release()`.
A "slow request" therefore lasts exactly as long as the test needs, never a guessed
number of seconds. An input of 0 answers at once (the health check's sample).
`gated_load` is the same model, but its load waits for `{namespace}:gate:load` first, so
a swap can be caught while Swapping for as long as the test needs.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable

import numpy as np
import redis

from swaps.engine.spec import TensorSpec, VersionSpec

GATED_FACTORY = "tests.fleet_models:gated"
GATED_LOAD_FACTORY = "tests.fleet_models:gated_load"
LOAD_GATE = "load"
# A held request gives up after this long, so a test that fails before releasing its gate
# does not leave a replica's thread blocked for good; the answer is then an error.
HOLD_CAP_SECONDS = 120.0
# redis-py 8 times a socket read out after 5 s by default; a BLPOP waits far longer.
_SOCKET_TIMEOUT = HOLD_CAP_SECONDS + 10
# Gate numbers travel as FP32: every integer below 2**24 is exact.
_GATE_NUMBERS = 2**24
MEMORY_LIMIT_BYTES = 200 * 2**20


class GateTimedOut(RuntimeError):
    pass


def gate_key(namespace: str, gate: int | str) -> str:
    return f"{namespace}:gate:{gate}"


def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=_SOCKET_TIMEOUT)


def _wait_for_gate(client: redis.Redis, gate: int | str) -> None:
    key = gate_key(os.environ.get("HOTSWAP_NAMESPACE", "hotswap"), gate)
    if client.blpop([key], timeout=HOLD_CAP_SECONDS) is None:
        raise GateTimedOut(f"gate {gate} was not released")


class _Gated:
    """Holds each row's request until its gate opens, then echoes the batch.

    Redis is reached only when a request is held, so loading (and the health check's
    sample) needs none: unit tests load this model in-process without a fleet.
    """

    def __init__(self) -> None:
        self._client: redis.Redis | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        for value in batch.ravel():
            if math.isfinite(value) and value > 0:
                self._hold(int(value))
        return batch

    def _hold(self, number: int) -> None:
        if self._client is None:
            self._client = _client()
        _wait_for_gate(self._client, number)


def gated() -> Callable[[np.ndarray], np.ndarray]:
    """Factory of the gated model (see the module's docstring)."""
    return _Gated()


def gated_load() -> Callable[[np.ndarray], np.ndarray]:
    """Factory: the gated model, once the load gate (`Gate.for_loads`) is released."""
    with _client() as client:
        _wait_for_gate(client, LOAD_GATE)
    return _Gated()


def gated_spec(
    *, model_id: str = "held", version: str = "1", factory: str = GATED_FACTORY
) -> VersionSpec:
    tensor = TensorSpec("input-0", "FP32", (-1, 1))
    return VersionSpec(
        model_id=model_id,
        version=version,
        runtime="python",
        artifact=factory,
        sample_input=[[0.0]],  # the health check must not wait
        expected_output_shape=(-1, 1),
        expected_output_dtype="FP32",
        memory_limit_bytes=MEMORY_LIMIT_BYTES,
        inputs=(tensor,),
        outputs=(TensorSpec("output-0", "FP32", (-1, 1)),),
    )


class Gate:
    """One held request's gate: send `body()` to a gated model, then `release()` it."""

    def __init__(self, redis_url: str, namespace: str, name: int | str | None = None) -> None:
        self.name = name if name is not None else random.randrange(1, _GATE_NUMBERS)
        self.key = gate_key(namespace, self.name)
        self._redis_url = redis_url

    @classmethod
    def for_loads(cls, redis_url: str, namespace: str) -> Gate:
        """The gate `gated_load` versions wait for; each release lets one load through."""
        return cls(redis_url, namespace, LOAD_GATE)

    def body(self) -> dict:
        row = {"name": "input-0", "shape": [1, 1], "datatype": "FP32", "data": [self.name]}
        return {"inputs": [row]}

    def release(self) -> None:
        with redis.Redis.from_url(self._redis_url) as client:
            client.rpush(self.key, 1)
