from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from swaps.engine.health import probe
from swaps.engine.runtimes import load
from swaps.engine.spec import TensorSpec, VersionSpec

PLENTY = 64 * 2**30


# Factories the python runtime loads from this module.
class _Exploding:
    def predict(self, inputs):
        raise RuntimeError("model exploded")


def exploding_predict():
    return _Exploding()


class _Silent:
    def predict(self, inputs):
        return {}


def silent_predict():
    return _Silent()


def declared_spec(factory: str) -> VersionSpec:
    """A version whose tensors are declared, so it loads without running its sample."""
    return VersionSpec(
        model_id="toy",
        version="9",
        runtime="python",
        artifact=f"{__name__}:{factory}",
        sample_input=[[1.0, 2.0]],
        expected_output_shape=(-1,),
        expected_output_dtype="FP32",
        memory_limit_bytes=200 * 2**20,
        inputs=(TensorSpec("input-0", "FP32", (-1, 2)),),
        outputs=(TensorSpec("output-0", "FP32", (-1,)),),
    )


@pytest.fixture
def sklearn_check(iris_specs, iris_models):
    """Probe the loaded sklearn iris version against its spec with some fields changed."""

    def check(**changes):
        return probe(spec=replace(iris_specs["1"], **changes), model=iris_models["1"])

    return check


def test_sklearn_version_is_healthy(iris_specs, iris_models):
    assert probe(spec=iris_specs["1"], model=iris_models["1"]).healthy


def test_onnx_version_is_healthy(iris_specs, iris_models):
    assert probe(spec=iris_specs["2"], model=iris_models["2"]).healthy


def test_healthy_version_has_no_reason(iris_specs, iris_models):
    assert probe(spec=iris_specs["1"], model=iris_models["1"]).reason == ""


def test_healthy_result_reports_the_primary_output_it_saw(iris_specs, iris_models):
    result = probe(spec=iris_specs["2"], model=iris_models["2"])
    assert (result.output_shape, result.output_dtype) == ((1,), "INT64")


def test_healthy_result_reports_latency_of_the_real_inference(iris_specs, iris_models):
    assert probe(spec=iris_specs["1"], model=iris_models["1"]).latency_ms > 0


def test_result_reports_the_measured_memory_and_the_limit(iris_specs, iris_models):
    result = probe(spec=iris_specs["1"], model=iris_models["1"])
    assert (result.memory_bytes, result.memory_limit_bytes) == (
        iris_models["1"].memory_bytes,
        iris_specs["1"].memory_limit_bytes,
    )


def test_result_names_the_replica_that_ran_it(iris_specs, iris_models):
    assert probe(spec=iris_specs["1"], model=iris_models["1"], replica="r-7").replica == "r-7"


def test_broken_version_fails_on_output_shape(iris_specs, iris_models):
    result = probe(spec=iris_specs["3"], model=iris_models["3"])
    assert (result.healthy, result.reason) == (
        False,
        "output shape (1, 3) does not match the declared (-1,)",
    )


def test_broken_version_ran_its_inference(iris_specs, iris_models):
    result = probe(spec=iris_specs["3"], model=iris_models["3"])
    assert (result.inference_ran, result.output_valid) == (True, False)


def test_unloaded_version_fails_as_not_loaded(iris_specs):
    result = probe(spec=iris_specs["1"], model=None)
    assert (result.healthy, result.loaded, result.reason) == (False, False, "not loaded")


def test_datatype_mismatch_fails(sklearn_check):
    result = sklearn_check(expected_output_dtype="FP32")
    assert (result.output_valid, result.reason) == (
        False,
        "output datatype INT64 does not match the declared FP32",
    )


def test_any_size_dimension_accepts_the_batch(sklearn_check):
    assert sklearn_check(expected_output_shape=(-1,)).output_valid


def test_fixed_dimension_must_match_exactly(sklearn_check):
    assert not sklearn_check(expected_output_shape=(2,)).output_valid


def test_memory_over_its_limit_fails(sklearn_check, iris_models):
    result = sklearn_check(memory_limit_bytes=iris_models["1"].memory_bytes - 1)
    assert (result.healthy, result.memory_within_limit) == (False, False)


def test_memory_over_its_limit_reason_gives_both_figures(iris_specs, iris_models):
    model = replace(iris_models["1"], memory_bytes=int(212.4 * 2**20))
    result = probe(spec=replace(iris_specs["1"], memory_limit_bytes=100 * 2**20), model=model)
    assert result.reason == "uses 212.4 MB, over its 100.0 MB limit"


def test_host_without_room_fails(iris_specs, iris_models):
    result = probe(spec=iris_specs["1"], model=iris_models["1"], memory_available=0)
    assert (result.healthy, result.memory_within_limit) == (False, False)


def test_host_without_room_says_so(iris_specs, iris_models):
    result = probe(spec=iris_specs["1"], model=iris_models["1"], memory_available=0)
    assert result.reason.startswith("the host has only 0.0 MB of memory available")


def test_host_with_room_passes(iris_specs, iris_models):
    assert probe(spec=iris_specs["1"], model=iris_models["1"], memory_available=PLENTY).healthy


def test_predict_raising_fails_with_its_message():
    spec = declared_spec("exploding_predict")
    result = probe(spec=spec, model=load(spec))
    assert (result.healthy, result.inference_ran, result.reason) == (
        False,
        False,
        "sample inference failed: RuntimeError: model exploded",
    )


def test_predict_returning_nothing_fails():
    spec = declared_spec("silent_predict")
    assert probe(spec=spec, model=load(spec)).reason == "sample inference returned no outputs"


def test_sample_input_that_does_not_fit_fails_the_inference(sklearn_check):
    result = sklearn_check(sample_input=[[1.0, 2.0]])
    assert result.reason.startswith("sample inference failed: ValueError")


def test_first_failing_check_is_the_reason(iris_specs, iris_models):
    spec = replace(iris_specs["3"], memory_limit_bytes=0)
    assert probe(spec=spec, model=iris_models["3"]).reason.startswith("output shape")


def test_sample_input_is_fed_in_the_model_input_datatype(iris_specs, iris_models):
    seen = []

    class Recording:
        spec = iris_specs["1"]
        platform = "python"
        inputs = iris_models["1"].inputs
        outputs = iris_models["1"].outputs
        memory_bytes = 1
        load_seconds = 0.0

        def predict(self, inputs):
            seen.append({name: value.dtype for name, value in inputs.items()})
            return {"predict": np.zeros(1, dtype=np.int64)}

    probe(spec=iris_specs["1"], model=Recording())
    assert seen == [{"input-0": np.dtype(np.float32)}]
