"""Python-callable models for the engine's tests, loaded through the real python runtime.

`gated` holds any request whose first value is negative until the test opens the gate,
so a test can keep a request in flight for exactly as long as it needs.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

GATE = threading.Event()
ENTERED = threading.Semaphore(0)  # released once per request that reaches the gate


class Gated:
    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = next(iter(inputs.values())).astype(np.float32)
        if x.size and x.flat[0] < 0:
            ENTERED.release()
            if not GATE.wait(timeout=30):
                raise TimeoutError("the test never opened the gate")
        return {"output-0": x * 2}


def gated() -> Gated:
    return Gated()


def wrong_shape():
    return lambda x: np.zeros((len(x), 3), dtype=np.float32)


def refuses_to_load():
    raise RuntimeError("weights are corrupt")


def fails_to_predict():
    """Loads, but every inference raises: a model that fails its requests."""

    def predict(x):
        raise RuntimeError("the model fell over")

    return predict
