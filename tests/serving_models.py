"""A light model for the serving tests (REST, gRPC, batching): numpy only.

`echo_or_fail` echoes its batch, and raises on a batch that holds a negative value: a
request can make the model fail on purpose (and, batched, fail the batch it is in).
"""

from __future__ import annotations

from collections.abc import Callable

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


def echo_spec(*, model_id: str = "echo", version: str = "1", **fields) -> VersionSpec:
    return VersionSpec(
        model_id=model_id,
        version=version,
        runtime="python",
        artifact=ECHO_FACTORY,
        sample_input=[[0.0]],
        expected_output_shape=(-1, 1),
        expected_output_dtype="FP32",
        memory_limit_bytes=200 * 2**20,
        inputs=(TensorSpec("input-0", "FP32", (-1, 1)),),
        outputs=(TensorSpec("output-0", "FP32", (-1, 1)),),
        **fields,
    )
