from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris

from swaps.engine import runtimes
from swaps.engine.errors import LoadError
from swaps.engine.ports import LoadedModel
from swaps.engine.runtimes import load
from swaps.engine.spec import TensorSpec, VersionSpec

MODULE = __name__
FIFTY_MB = 50 * 2**20


# Factories the python runtime loads from this module.
def fifty_megabytes():
    weights = np.ones(FIFTY_MB, dtype=np.uint8)
    return lambda batch: np.asarray(batch) * weights[0]


def doubler():
    return lambda batch: np.asarray(batch) * 2


class _NamedOutputs:
    def predict(self, inputs):
        batch = next(iter(inputs.values()))
        return {"total": batch.sum(axis=1), "count": np.full(len(batch), batch.shape[1])}


def named_outputs():
    return _NamedOutputs()


def exploding():
    raise RuntimeError("weights are missing")


def exiting():
    raise SystemExit(3)


def not_a_model():
    return 42


NOT_A_FACTORY = "just a string"


def python_spec(factory: str, **changes) -> VersionSpec:
    spec = VersionSpec(
        model_id="toy",
        version="7",
        runtime="python",
        artifact=f"{MODULE}:{factory}",
        sample_input=[[1.0, 2.0]],
        expected_output_shape=(-1, 2),
        expected_output_dtype="FP64",
        memory_limit_bytes=200 * 2**20,
    )
    return replace(spec, **changes)


@pytest.fixture(scope="module")
def iris():
    data = load_iris()
    return data.data.astype(np.float32), data.target


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predicted == labels))


# Real predictions


def test_sklearn_version_predicts_iris_labels(iris_models, iris):
    features, labels = iris
    predicted = iris_models["1"].predict({"input-0": features})["label"]
    assert accuracy(predicted, labels) > 0.9


def test_onnx_version_predicts_iris_labels(iris_models, iris):
    features, labels = iris
    predicted = iris_models["2"].predict({"input_0": features})["label"]
    assert accuracy(predicted, labels) > 0.9


def test_python_version_runs_its_factory_on_iris_rows(iris_models, iris):
    features, labels = iris
    probabilities = iris_models["3"].predict({"input-0": features})["label"]
    assert accuracy(probabilities.argmax(axis=1), labels) > 0.9


def test_a_lone_input_is_accepted_under_any_name(iris_models, iris):
    features, labels = iris
    predicted = iris_models["2"].predict({"whatever": features})["label"]
    assert accuracy(predicted, labels) > 0.9


def test_onnx_converts_float64_input_to_its_declared_type(iris_models, iris):
    features, labels = iris
    predicted = iris_models["2"].predict({"input_0": features.astype(np.float64)})["label"]
    assert accuracy(predicted, labels) > 0.9


@pytest.fixture(scope="module")
def undeclared(iris_specs):
    """Iris 1 and 2 loaded without declared outputs: each runtime describes its own."""
    return {v: load(replace(iris_specs[v], outputs=())) for v in ("1", "2")}


def test_onnx_without_declared_outputs_returns_every_output_in_session_order(undeclared, iris):
    outputs = undeclared["2"].predict({"input_0": iris[0][:5]})
    assert list(outputs) == ["label", "probabilities"]


def test_declared_outputs_are_served_under_their_names_whatever_the_runtime(iris_models, iris):
    sklearn = iris_models["1"].predict({"input-0": iris[0][:5]})
    onnx = iris_models["2"].predict({"input_0": iris[0][:5]})

    assert list(sklearn) == list(onnx) == ["label"]
    assert iris_models["1"].outputs == iris_models["2"].outputs


def test_an_onnx_output_declared_under_another_name_is_the_one_at_its_position(iris_specs, iris):
    renamed = replace(iris_specs["2"], outputs=(TensorSpec("class", "INT64", (-1,)),))

    outputs = load(renamed).predict({"input_0": iris[0][:5]})

    assert list(outputs) == ["class"]
    assert outputs["class"].dtype == np.int64


def test_predict_from_many_threads_gives_the_same_answers(iris_models, iris):
    model = iris_models["2"]
    rows = [iris[0][i : i + 1] for i in range(150)]
    alone = [model.predict({"input_0": row})["label"][0] for row in rows]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda row: model.predict({"input_0": row})["label"][0], rows))
    assert together == alone


def test_python_object_with_predict_returns_its_named_outputs():
    model = load(python_spec("named_outputs"))
    outputs = model.predict({"input-0": np.array([[1.0, 2.0, 3.0]])})
    assert {name: value.tolist() for name, value in outputs.items()} == {
        "total": [6.0],
        "count": [3],
    }


def test_loaded_models_satisfy_the_loaded_model_port(iris_models):
    assert all(isinstance(model, LoadedModel) for model in iris_models.values())


# Metadata


def test_sklearn_describes_one_fp32_input_of_its_feature_count(iris_models):
    assert iris_models["1"].inputs == (TensorSpec("input-0", "FP32", (-1, 4)),)


def test_sklearn_describes_its_predict_output_from_a_real_prediction(undeclared):
    assert undeclared["1"].outputs == (TensorSpec("predict", "INT64", (-1,)),)


def test_onnx_describes_its_inputs_from_the_session(iris_models):
    assert iris_models["2"].inputs == (TensorSpec("input_0", "FP32", (-1, 4)),)


def test_onnx_describes_its_outputs_from_the_session(undeclared):
    assert undeclared["2"].outputs == (
        TensorSpec("label", "INT64", (-1,)),
        TensorSpec("probabilities", "FP32", (-1, 3)),
    )


def test_each_runtime_names_its_platform(iris_models):
    platforms = {version: model.platform for version, model in iris_models.items()}
    assert platforms == {"1": "sklearn", "2": "onnxruntime_onnx", "3": "python"}


def test_python_derives_its_input_from_the_sample():
    assert load(python_spec("doubler")).inputs == (TensorSpec("input-0", "FP64", (-1, 2)),)


def test_python_derives_its_output_from_a_run_on_the_sample():
    assert load(python_spec("doubler")).outputs == (TensorSpec("output-0", "FP64", (-1, 2)),)


def test_python_keeps_declared_tensors():
    declared_in = (TensorSpec("features", "FP32", (-1, 2)),)
    declared_out = (TensorSpec("doubled", "FP32", (-1, 2)),)
    model = load(python_spec("doubler", inputs=declared_in, outputs=declared_out))
    assert (model.inputs, model.outputs) == (declared_in, declared_out)


def test_python_callable_answers_under_the_declared_output_name():
    declared_out = (TensorSpec("doubled", "FP64", (-1, 2)),)
    model = load(python_spec("doubler", outputs=declared_out))
    assert list(model.predict({"input-0": np.array([[1.0, 2.0]])})) == ["doubled"]


# Memory and timing


@pytest.mark.parametrize("version", ["1", "2", "3"])
def test_memory_is_measured_while_loading(iris_specs, version):
    assert load(iris_specs[version]).memory_bytes > 0


def test_memory_counts_a_big_array_the_model_holds():
    assert load(python_spec("fifty_megabytes")).memory_bytes >= FIFTY_MB


def test_memory_is_larger_for_a_model_holding_a_big_array():
    small = load(python_spec("doubler")).memory_bytes
    assert load(python_spec("fifty_megabytes")).memory_bytes > small


FIRST_LOAD = """
import json, sys
from swaps.engine import runtimes
from swaps.engine.runtimes import load
from swaps.engine.spec import VersionSpec
model = load(VersionSpec.from_dict(json.loads(sys.argv[1])))
print(json.dumps({"memory": model.memory_bytes, "onnxruntime": "onnxruntime" in sys.modules}))
"""


@pytest.fixture(scope="module")
def first_sklearn_load(iris_specs) -> dict:
    """iris 1 loaded by a fresh interpreter: what it was charged, what it imported."""
    done = subprocess.run(
        [sys.executable, "-c", FIRST_LOAD, json.dumps(iris_specs["1"].as_dict())],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_first_sklearn_version_is_not_charged_for_scikit_learn_itself(first_sklearn_load):
    # Imported inside the measurement, scikit-learn's own code counted 115 MB.
    assert first_sklearn_load["memory"] < 40 * 2**20


def test_a_process_that_loads_no_onnx_version_never_imports_onnx_runtime(first_sklearn_load):
    assert first_sklearn_load["onnxruntime"] is False


def test_load_time_is_recorded(iris_models):
    assert all(model.load_seconds > 0 for model in iris_models.values())


def test_loading_leaves_tracemalloc_off_when_it_was_off():
    load(python_spec("doubler"))
    assert not tracemalloc.is_tracing()


def test_loading_leaves_tracemalloc_on_when_it_was_on():
    tracemalloc.start()
    try:
        load(python_spec("doubler"))
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()


# Failures


def load_error(spec: VersionSpec) -> str:
    with pytest.raises(LoadError) as caught:
        load(spec)
    return caught.value.message


def test_missing_file_is_a_load_error_naming_version_artifact_and_cause(iris_specs, tmp_path):
    artifact = str(tmp_path / "gone.joblib")
    assert load_error(replace(iris_specs["1"], artifact=artifact)) == (
        f"cannot load version '1' of model 'iris' from {artifact!r}: "
        "the artifact file does not exist"
    )


def test_corrupt_joblib_file_is_a_load_error(iris_specs, tmp_path):
    artifact = tmp_path / "corrupt.joblib"
    artifact.write_bytes(b"this is not a pickle")
    assert "not a joblib file" in load_error(replace(iris_specs["1"], artifact=str(artifact)))


def test_truncated_onnx_file_is_a_load_error(iris_specs, tmp_path):
    artifact = tmp_path / "truncated.onnx"
    with open(iris_specs["2"].artifact, "rb") as whole:
        artifact.write_bytes(whole.read()[:200])
    assert "not an ONNX model" in load_error(replace(iris_specs["2"], artifact=str(artifact)))


def test_pickle_without_predict_is_a_load_error(iris_specs, tmp_path):
    artifact = tmp_path / "dict.joblib"
    joblib.dump({"weights": [1, 2, 3]}, artifact)
    message = load_error(replace(iris_specs["1"], artifact=str(artifact)))
    assert "holds a dict, which has no predict method" in message


def test_factory_path_without_colon_is_a_load_error():
    assert "package.module:factory" in load_error(python_spec("", artifact="no_colon_here"))


def test_unimportable_factory_module_is_a_load_error():
    message = load_error(python_spec("", artifact="no_such_package.models:factory"))
    assert "cannot import module 'no_such_package.models'" in message


def test_missing_factory_is_a_load_error():
    assert "has no attribute 'no_such_factory'" in load_error(python_spec("no_such_factory"))


def test_non_callable_factory_is_a_load_error():
    assert "not a callable factory" in load_error(python_spec("NOT_A_FACTORY"))


def test_factory_raising_is_a_load_error_with_its_message():
    message = load_error(python_spec("exploding"))
    assert "RuntimeError: weights are missing" in message


def test_factory_exiting_is_a_load_error_not_an_exit():
    assert "the factory raised SystemExit: 3" in load_error(python_spec("exiting"))


def test_factory_returning_no_model_is_a_load_error():
    assert "not callable" in load_error(python_spec("not_a_model"))


def test_sample_that_does_not_run_is_a_load_error_when_outputs_are_undeclared():
    assert "sample inference failed" in load_error(python_spec("named_outputs", sample_input=[]))


def test_a_runtime_that_cannot_be_imported_is_a_load_error(monkeypatch):
    monkeypatch.setitem(runtimes.FRAMEWORKS, "python", ("no_such_framework",))

    message = load_error(python_spec("doubler"))

    assert "the python runtime cannot be imported" in message
    assert "no_such_framework" in message


def test_unknown_runtime_is_a_load_error_listing_the_known_ones(iris_specs):
    message = load_error(replace(iris_specs["1"], runtime="tensorflow"))
    assert "unknown runtime 'tensorflow'; expected one of sklearn, onnx, python" in message
