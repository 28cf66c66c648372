"""A light model for the serving tests (REST, gRPC, batching): numpy only.

`echo_or_fail` echoes its batch, and raises on a batch that holds a negative value: a
request can make the model fail on purpose (and, batched, fail the batch it is in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from swaps.engine.spec import TensorSpec, VersionSpec

ECHO_FACTORY = "tests.serving_models:echo_or_fail"
FAILURE = "a negative value: this model fails on purpose"


def echo_or_fail() -> Callable[[np.ndarray], np.ndarray]:
    def run(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if (batch < 0).any():
            raise ValueError(FAILURE)
        return batch

    return run


def echo_spec(
    *, model_id: str = "echo", version: str = "1", artifact: str = ECHO_FACTORY, **fields
) -> VersionSpec:
    return VersionSpec(
        model_id=model_id,
        version=version,
        runtime="python",
        artifact=artifact,
        sample_input=[[0.0]],
        expected_output_shape=(-1, 1),
        expected_output_dtype="FP32",
        memory_limit_bytes=200 * 2**20,
        inputs=(TensorSpec("input-0", "FP32", (-1, 1)),),
        outputs=(TensorSpec("output-0", "FP32", (-1, 1)),),
        **fields,
    )


COUNTING_FACTORY = "tests.serving_models:counting"
SUMMING_FACTORY = "tests.serving_models:summing"


class _Counting:
    """Echoes its batch, and answers each row with how many rows its batch had: a
    batched request sees the batch it was in. Fails on a negative value."""

    def predict(self, batch):
        rows = np.asarray(batch["input-0"], dtype=np.float32)
        if (rows < 0).any():
            raise ValueError(FAILURE)
        return {"output-0": rows, "batch_rows": np.full((len(rows), 1), len(rows), np.int64)}


def counting() -> _Counting:
    return _Counting()


def summing() -> Callable[[np.ndarray], np.ndarray]:
    """One row for any batch: a model whose outputs cannot be split by request."""
    return lambda batch: np.asarray(batch, dtype=np.float32).sum(axis=0, keepdims=True)


def counting_spec(*, model_id: str = "counting", **fields) -> VersionSpec:
    spec = echo_spec(model_id=model_id, artifact=COUNTING_FACTORY, **fields)
    return replace(
        spec,
        outputs=(
            TensorSpec("output-0", "FP32", (-1, 1)),
            TensorSpec("batch_rows", "INT64", (-1, 1)),
        ),
    )
