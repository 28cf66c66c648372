"""Registration takes what the registrant left out from a sandboxed trial of the model.

Before, a version needed nine fields, four of which (a sample batch, the output's shape
and datatype, a memory limit) a newcomer had to guess even for a scikit-learn file that
knows them; now the runtime and the artifact are enough, the record lists what was
taken, and a model that cannot be tried is not registered at all.
"""

from __future__ import annotations

import pytest

from swaps import model_probe
from swaps.engine import health, runtimes
from swaps.fleet_state import specs_of
from swaps.models import AuditEntry, ModelVersion

from .control_plane import client_for, post_json

EVERYTHING = list(model_probe.TAKEABLE)  # all a model can tell


def register(user, body: dict, model: str = "iris"):
    return post_json(client_for(user), f"/api/models/{model}/versions", body)


def test_a_scikit_learn_file_alone_is_enough_and_the_record_says_what_was_taken(alice, iris_specs):
    response = register(
        alice, {"version": "7", "runtime": "sklearn", "artifact": iris_specs["1"].artifact}
    )

    assert response.status_code == 201, response.json()
    document = response.json()
    assert document["taken_from_model"] == EVERYTHING
    assert document["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert document["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert document["sample_input"] == [[0.0, 0.0, 0.0, 0.0]]
    assert (document["expected_output_shape"], document["expected_output_dtype"]) == ([-1], "INT64")
    limit = document["memory_limit_bytes"]
    assert limit >= model_probe.MIN_MEMORY_LIMIT_BYTES and limit % 2**20 == 0
    entry = AuditEntry.objects.get(action="register_version", outcome="accepted")
    assert entry.details["taken_from_model"] == EVERYTHING


def test_a_version_registered_from_its_trial_passes_its_health_check_where_it_serves(
    alice, iris_specs
):
    register(alice, {"version": "7", "runtime": "sklearn", "artifact": iris_specs["1"].artifact})
    (spec,) = specs_of([ModelVersion.objects.get(version="7")])

    result = health.probe(spec=spec, model=runtimes.load(spec))

    assert result.healthy, result.reason


def test_what_the_registrant_gave_is_kept_and_only_the_rest_is_taken(alice, iris_specs):
    outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]}]
    body = {
        "version": "7",
        "runtime": "onnx",
        "artifact": iris_specs["2"].artifact,
        "sample_input": [[5.1, 3.5, 1.4, 0.2]],
        "outputs": outputs,
    }

    document = register(alice, body).json()

    assert document["taken_from_model"] == [
        "inputs",
        "expected_output_shape",
        "expected_output_dtype",
        "memory_limit_bytes",
    ]
    assert document["sample_input"] == [[5.1, 3.5, 1.4, 0.2]]
    assert document["outputs"] == outputs
    # The ONNX file's own input, as every replica will report it.
    assert document["inputs"] == [{"name": "input_0", "datatype": "FP32", "shape": [-1, 4]}]
    assert (document["expected_output_shape"], document["expected_output_dtype"]) == ([-1], "INT64")


def test_a_fully_declared_version_is_registered_without_a_trial(alice, iris_specs, monkeypatch):
    def no_trial(fields):
        raise AssertionError("a trial was run for a version that left nothing out")

    monkeypatch.setattr(model_probe, "take_from_model", no_trial)
    spec = iris_specs["1"].as_dict()
    body = {name: spec[name] for name in EVERYTHING} | {
        "version": "7",
        "runtime": "sklearn",
        "artifact": spec["artifact"],
    }

    response = register(alice, body)

    assert response.status_code == 201, response.json()
    assert response.json()["taken_from_model"] == []


def test_a_model_whose_load_crashes_is_not_registered_and_the_console_lives_on(alice):
    body = {
        "version": "7",
        "runtime": "python",
        "artifact": "tests.hostile_models:abort",
        "sample_input": [[1.0]],
    }

    response = register(alice, body)

    assert response.status_code == 400
    error = response.json()["fields"]["artifact"]
    assert "could not be tried to take" in error and "crashed the process" in error, error
    assert not ModelVersion.objects.filter(version="7").exists()
    # This process (the control plane's, here the test's) is still here to read that.


@pytest.mark.parametrize(
    ("artifact", "says"),
    [("os:getpid", "has no predict method and is not callable")],
)
def test_a_callable_that_is_no_model_is_refused_naming_why(alice, artifact, says):
    body = {"version": "7", "runtime": "python", "artifact": artifact, "sample_input": [[1.0]]}

    response = register(alice, body)

    assert response.status_code == 400
    assert says in response.json()["fields"]["artifact"]


def test_a_python_version_needs_a_sample_or_its_inputs(alice):
    body = {"version": "7", "runtime": "python", "artifact": "swaps.demo_models:broken_iris"}

    response = register(alice, body)

    assert response.status_code == 400
    assert "needs a sample_input" in response.json()["fields"]["sample_input"]
    assert not ModelVersion.objects.filter(version="7").exists()
