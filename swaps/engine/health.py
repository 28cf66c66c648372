"""The seed's health check of one loaded version, run where the version is loaded.

A version is healthy when it is loaded, its sample input runs through a real inference,
the primary output has the declared shape and datatype, and its measured memory fits
both its own limit and the host. `probe` answers with a `HealthCheckResult` and never
raises: a model that throws or answers nonsense is a failed check. It runs the sample
on the calling thread, so a caller that must not hang runs it on a worker thread with a
timeout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .batching import batched_sample_failure
from .ports import LoadedModel
from .results import HealthCheckResult, utcnow
from .runtimes import describe_exception, sample_batch
from .spec import VersionSpec
from .tensors import shape_matches, v2_datatype

NOT_LOADED = "not loaded"
INFERENCE_FAILED = "sample inference failed: {error}"
NO_OUTPUTS = "sample inference returned no outputs"
WRONG_SHAPE = "output shape {actual} does not match the declared {declared}"
WRONG_DATATYPE = "output datatype {actual} does not match the declared {declared}"
OVER_LIMIT = "uses {used}, over its {limit} limit"
NO_HOST_ROOM = (
    "the host has only {available} of memory available, less than the {used} this "
    "version uses: no room to keep it loaded beside the versions already there"
)
CHECK_FAILED = "health check failed: {error}"


def probe(
    *,
    spec: VersionSpec,
    model: LoadedModel | None,
    replica: str = "local",
    memory_available: int | None = None,
) -> HealthCheckResult:
    """Check `model` (loaded from `spec`, or None when it is not loaded) against `spec`.

    `memory_available` is the host's available memory (psutil's `available`) read with
    the version already loaded; the host has room when that is still at least what the
    version uses, so a second version (a swap's target beside its source) fits too.
    Order of checks, and so of the reason reported: loaded, inference, output shape,
    output datatype, memory limit, host memory.
    """
    checked_at = utcnow()
    base = {
        "model_id": spec.model_id,
        "version": spec.version,
        "memory_limit_bytes": spec.memory_limit_bytes,
        "checked_at": checked_at,
        "replica": replica,
    }
    if model is None:
        return _failed(base, loaded=False, memory_bytes=None, reason=NOT_LOADED)
    try:
        return _probe_loaded(spec, model, memory_available, base)
    except Exception as exc:  # a spec or model object broken in a way the checks missed
        reason = CHECK_FAILED.format(error=describe_exception(exc))
        return _failed(
            base, loaded=True, memory_bytes=getattr(model, "memory_bytes", None), reason=reason
        )


def _failed(
    base: dict[str, Any], *, loaded: bool, memory_bytes: int | None, reason: str
) -> HealthCheckResult:
    """A check that could not get as far as judging the model's output or memory."""
    return HealthCheckResult(
        **base,
        healthy=False,
        loaded=loaded,
        inference_ran=False,
        output_valid=False,
        memory_within_limit=False,
        latency_ms=None,
        memory_bytes=memory_bytes,
        reason=reason,
    )


def _probe_loaded(
    spec: VersionSpec,
    model: LoadedModel,
    memory_available: int | None,
    base: dict[str, Any],
) -> HealthCheckResult:
    failures: list[str] = []
    latency_ms = None
    shape = datatype = None
    try:
        outputs, latency_ms = _run_sample(spec, model)
    except Exception as exc:
        failures.append(INFERENCE_FAILED.format(error=describe_exception(exc)))
        outputs = None
    if outputs is not None:
        if outputs:
            primary = np.asarray(next(iter(outputs.values())))
            shape = tuple(int(d) for d in primary.shape)
            datatype = _datatype_name(primary.dtype)
            if not shape_matches(shape, tuple(spec.expected_output_shape)):
                failures.append(
                    WRONG_SHAPE.format(actual=shape, declared=tuple(spec.expected_output_shape))
                )
            if datatype != spec.expected_output_dtype.upper():
                failures.append(
                    WRONG_DATATYPE.format(actual=datatype, declared=spec.expected_output_dtype)
                )
        else:
            failures.append(NO_OUTPUTS)
    if outputs and not failures and spec.batching:
        # A batched version answers merged requests: its rows must split back.
        failure = batched_sample_failure(model.predict, _sample(spec, model))
        if failure is not None:
            failures.append(failure)
    output_valid = bool(outputs) and not failures
    memory_failures = _memory_failures(model.memory_bytes, spec, memory_available)
    failures.extend(memory_failures)
    return HealthCheckResult(
        **base,
        healthy=not failures,
        loaded=True,
        inference_ran=outputs is not None,
        output_valid=output_valid,
        memory_within_limit=not memory_failures,
        latency_ms=latency_ms,
        memory_bytes=model.memory_bytes,
        reason=failures[0] if failures else "",
        output_shape=shape,
        output_dtype=datatype,
    )


def _sample(spec: VersionSpec, model: LoadedModel) -> dict[str, np.ndarray]:
    first = model.inputs[0] if model.inputs else None
    batch = sample_batch(spec, first) if first else np.asarray(spec.sample_input)
    return {first.name if first else "input-0": batch}


def _run_sample(spec: VersionSpec, model: LoadedModel) -> tuple[Mapping[str, object], float]:
    sample = _sample(spec, model)
    started = time.perf_counter()
    outputs = model.predict(sample)
    if not isinstance(outputs, Mapping):
        raise TypeError(f"predict returned a {type(outputs).__name__}, not named outputs")
    return outputs, (time.perf_counter() - started) * 1000


def _memory_failures(used: int, spec: VersionSpec, available: int | None) -> list[str]:
    failures = []
    if used > spec.memory_limit_bytes:
        failures.append(OVER_LIMIT.format(used=_mb(used), limit=_mb(spec.memory_limit_bytes)))
    if available is not None and available < used:
        failures.append(NO_HOST_ROOM.format(available=_mb(available), used=_mb(used)))
    return failures


def _datatype_name(dtype: np.dtype) -> str:
    try:
        return v2_datatype(dtype)
    except ValueError:
        return str(dtype)


def _mb(size: int) -> str:
    # MB as operators read it in `free -m` and psutil figures: 2**20 bytes.
    return f"{size / 2**20:.1f} MB"
