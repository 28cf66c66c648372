"""Factories of versions that attack the process loading them (tests of the sandbox).

Each is a `python` runtime artifact (`tests.hostile_models:abort`); `hostile_spec`
makes a version of one. Only a trial's child process should ever run them: a replica
that ran one itself would die, hang or swell.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

import numpy as np

from swaps.engine.spec import TensorSpec, VersionSpec

# A variable the test process sets and a trial must not see (as it must not see the
# Redis URL or the fleet key).
SECRET_VARIABLE = "HOTSWAP_TEST_SECRET"
GREEDY_BYTES = 600 * 2**20

Model = Callable[[np.ndarray], np.ndarray]


def _echo(batch: np.ndarray) -> np.ndarray:
    return np.asarray(batch, dtype=np.float32)


def abort() -> Model:
    os.abort()


def segfault() -> Model:
    ctypes.string_at(0)  # reads address 0: SIGSEGV
    raise AssertionError("unreachable")


def exit_process() -> Model:
    os._exit(3)


def hang() -> Model:
    signal.pause()
    raise AssertionError("unreachable")


def greedy() -> Model:
    """Allocates (and touches) 600 MB while loading, against a limit of a few MB."""
    hoard = np.ones(GREEDY_BYTES // 8)
    return lambda batch: _echo(batch) + 0 * hoard[0]


def crashes_on_predict() -> Model:
    """Loads quietly; its first inference (the health check's sample) aborts."""

    def predict(batch: np.ndarray) -> np.ndarray:
        os.abort()

    return predict


def reads_secret() -> Model:
    """Aborts where it can read SECRET_VARIABLE: in a trial that means it leaked."""
    if SECRET_VARIABLE in os.environ or any(
        SECRET_VARIABLE.encode() in chunk for chunk in _own_environ()
    ):
        os.abort()
    return _echo


def _own_environ() -> list[bytes]:
    with open("/proc/self/environ", "rb") as environ:
        return environ.read().split(b"\0")


def harmless() -> Model:
    return _echo


# Its own spec, not tests.fleet_models.gated_spec: importing that module (and redis) in a
# trial would count 16 MB of it as the version's memory, which the tests here measure.
def hostile_spec(
    factory: str, *, model_id: str = "hostile", version: str = "1", memory_mb: int = 64
) -> VersionSpec:
    tensor = TensorSpec("input-0", "FP32", (-1, 1))
    return VersionSpec(
        model_id=model_id,
        version=version,
        runtime="python",
        artifact=f"tests.hostile_models:{factory}",
        sample_input=[[1.0]],
        expected_output_shape=(-1, 1),
        expected_output_dtype="FP32",
        memory_limit_bytes=memory_mb * 2**20,
        inputs=(tensor,),
        outputs=(TensorSpec("output-0", "FP32", (-1, 1)),),
    )


def keeps_32_mb() -> Model:
    """A well-behaved version that keeps 32 MB (its trial must measure them)."""
    weights = np.ones(32 * 2**20 // 8)
    return lambda batch: _echo(batch) + 0 * weights[0]


MARK_NAME = "hotswap-version-code-ran"


def leaves_a_mark() -> Model:
    """Writes $TMPDIR/hotswap-version-code-ran: proof that a version's code ran at all
    (TMPDIR is one of the few variables a trial sees)."""
    with open(os.path.join(os.environ["TMPDIR"], MARK_NAME), "w") as mark:
        mark.write(str(os.getpid()))
    return _echo


def imports_scipy() -> Model:
    """A well-behaved version whose factory imports a framework itself (a python version
    wrapping an estimator): scipy.linalg, 30 MB to import on a cold trial server, 1 MB
    once it is warm. The import is not the version's memory."""
    import scipy.linalg  # noqa: F401

    return _echo
