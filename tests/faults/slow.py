"""A sleepy version that takes seconds to load, so a swap can be caught while Swapping.

Replicas import it by its factory path (`tests.faults.slow:slow_to_load`): they run
with the repository root on PYTHONPATH.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import numpy as np

from swaps.demo_models import sleepy, sleepy_spec
from swaps.engine.spec import VersionSpec

LOAD_SECONDS_VARIABLE = "HOTSWAP_TEST_LOAD_SECONDS"


def slow_to_load() -> Callable[[np.ndarray], np.ndarray]:
    time.sleep(float(os.environ.get(LOAD_SECONDS_VARIABLE, "5")))
    return sleepy()


def slow_spec(*, version: str) -> VersionSpec:
    return dataclasses.replace(
        sleepy_spec(version=version), artifact="tests.faults.slow:slow_to_load"
    )
