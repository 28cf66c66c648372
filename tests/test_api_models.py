"""GET /api/models, GET /api/models/<model>, its status, and registering versions."""

from __future__ import annotations

import pytest

from swaps import fleet_state
from swaps.engine.artifacts import digest_of
from swaps.models import AuditEntry, ModelVersion

from .control_plane import client_for, post_json

pytestmark = pytest.mark.django_db

NEW_VERSION = {
    "version": "4",
    "runtime": "python",
    "artifact": "swaps.demo_models:broken_iris",
    "sample_input": [[5.1, 3.5, 1.4, 0.2]],
    "expected_output_shape": [-1, 3],
    "expected_output_dtype": "FP64",
    "memory_limit_bytes": 100_000_000,
    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
}


def test_models_lists_each_model_with_its_active_version(alice, serving_version):
    document = client_for(alice).get("/api/models").json()

    assert [(m["name"], m["active_version"]) for m in document["models"]] == [("iris", "1")]


def test_models_lists_the_versions_of_each_model(alice, serving_version):
    document = client_for(alice).get("/api/models").json()

    assert document["models"][0]["versions"] == ["1", "2", "3"]


def test_a_model_shows_its_running_swap(alice, candidate_version):
    post_json(client_for(alice), "/api/models/iris/swaps", {"from_version": "1", "to_version": "2"})

    document = client_for(alice).get("/api/models/iris").json()

    assert (document["running"]["to_version"], document["running"]["state"]) == ("2", "pending")


def test_a_model_details_its_versions(alice, serving_version):
    document = client_for(alice).get("/api/models/iris").json()

    assert document["versions"][0]["runtime"] == "sklearn"
    assert document["versions"][0]["first_served_at"] is not None


def test_an_unknown_model_gets_404(alice, iris):
    response = client_for(alice).get("/api/models/nope")

    assert response.status_code == 404


def test_status_is_the_engine_swap_status(alice, serving_version):
    document = client_for(alice).get("/api/models/iris/status").json()

    assert {k: document[k] for k in ("model_id", "current_version", "state")} == {
        "model_id": "iris",
        "current_version": "1",
        "state": "idle",
    }


def test_status_counts_requests_in_flight(alice, serving_version, engine):
    engine.dispatcher.begin("iris")

    document = client_for(alice).get("/api/models/iris/status").json()

    assert document["pending_requests"] == 1


def test_status_of_an_unknown_model_gets_404(alice, iris):
    assert client_for(alice).get("/api/models/nope/status").status_code == 404


def test_registering_a_version_answers_201_with_the_record(alice, iris):
    response = post_json(client_for(alice), "/api/models/iris/versions", NEW_VERSION)

    assert response.status_code == 201, response.json()
    assert (response.json()["version"], response.json()["registered_by"]) == ("4", "alice")


def test_a_registered_version_is_published_to_the_fleet(alice, iris, engine):
    post_json(client_for(alice), "/api/models/iris/versions", NEW_VERSION)

    assert engine.versions._specs[("iris", "4")].runtime == "python"


def test_a_version_registered_with_batching_carries_it_to_the_fleet(alice, iris, engine):
    batched = {**NEW_VERSION, "max_batch_size": 8, "max_batch_delay_ms": 2}

    document = post_json(client_for(alice), "/api/models/iris/versions", batched).json()

    assert (document["max_batch_size"], document["max_batch_delay_ms"]) == (8, 2.0)
    spec = engine.versions._specs[("iris", "4")]
    assert (spec.max_batch_size, spec.max_batch_delay_ms) == (8, 2.0)


def test_a_version_registered_without_batching_is_not_batched(alice, iris, engine):
    post_json(client_for(alice), "/api/models/iris/versions", NEW_VERSION)

    assert not engine.versions._specs[("iris", "4")].batching


def test_bad_batching_fields_are_refused_naming_each(alice, iris):
    batched = {**NEW_VERSION, "max_batch_size": -1, "max_batch_delay_ms": 5000}

    response = post_json(client_for(alice), "/api/models/iris/versions", batched)

    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"max_batch_size", "max_batch_delay_ms"}


def test_registering_a_version_of_a_new_model_creates_the_model(alice, iris):
    post_json(client_for(alice), "/api/models/penguins/versions", NEW_VERSION)

    document = client_for(alice).get("/api/models/penguins").json()
    assert (document["versions"][0]["version"], document["active_version"]) == ("4", None)


def test_registering_a_version_twice_gets_409(alice, iris):
    post_json(client_for(alice), "/api/models/iris/versions", NEW_VERSION)

    response = post_json(client_for(alice), "/api/models/iris/versions", NEW_VERSION)

    assert response.status_code == 409
    assert ModelVersion.objects.filter(version="4").count() == 1


def test_registering_needs_the_register_permission(bob, iris):
    response = post_json(client_for(bob), "/api/models/iris/versions", NEW_VERSION)

    assert response.status_code == 403
    assert not ModelVersion.objects.filter(version="4").exists()


def test_a_bad_model_name_gets_400(alice, iris):
    response = post_json(client_for(alice), "/api/models/bad%20name/versions", NEW_VERSION)

    assert response.status_code == 400
    assert "model" in response.json()["fields"]


def test_registering_is_audited(alice, iris):
    post_json(client_for(alice), "/api/models/iris/versions", NEW_VERSION)

    entry = AuditEntry.objects.get(action="register_version")
    assert (entry.actor, entry.outcome, entry.model, entry.to_version) == (
        "alice",
        "accepted",
        "iris",
        "4",
    )


def test_status_when_the_fleet_cannot_be_reached_gets_503(alice, iris, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    with fleet_state.use_engine(fleet_state.open_fleet):
        response = client_for(alice).get("/api/models/iris/status")

    assert response.status_code == 503
    assert "cannot be reached" in response.json()["error"]


def file_version(artifact: str) -> dict:
    return {**NEW_VERSION, "runtime": "sklearn", "artifact": artifact, "inputs": []}


@pytest.mark.parametrize(
    ("artifact", "problem"),
    [
        ("{root}/missing.joblib", "no file at {root}/missing.joblib"),
        ("s3://bucket/iris.joblib", "s3:// URIs are not supported"),
        ("models/iris.joblib", "must be an absolute path"),
    ],
)
def test_a_file_artifact_replicas_could_not_load_is_refused_at_registration(
    alice, iris, artifact, problem, tmp_path
):
    artifact, problem = (text.format(root=tmp_path.resolve()) for text in (artifact, problem))
    response = post_json(client_for(alice), "/api/models/iris/versions", file_version(artifact))

    assert response.status_code == 400
    assert problem in response.json()["fields"]["artifact"]
    assert not ModelVersion.objects.filter(version="4").exists()


def test_a_file_artifact_that_exists_is_registered(alice, iris, iris_specs):
    body = file_version(iris_specs["1"].artifact)

    response = post_json(client_for(alice), "/api/models/iris/versions", body)

    assert response.status_code == 201


def test_a_file_version_is_registered_with_its_artifacts_sha256(alice, iris, iris_specs):
    body = file_version(iris_specs["1"].artifact)

    document = post_json(client_for(alice), "/api/models/iris/versions", body).json()

    pinned = digest_of(iris_specs["1"].artifact)
    assert pinned.startswith("sha256:")
    assert document["artifact_digest"] == pinned
    assert ModelVersion.objects.get(version="4").artifact_digest == pinned


def test_the_digest_travels_to_the_fleet_in_the_versions_spec(alice, iris, iris_specs, engine):
    post_json(
        client_for(alice), "/api/models/iris/versions", file_version(iris_specs["1"].artifact)
    )

    assert engine.versions._specs[("iris", "4")].artifact_digest == digest_of(
        iris_specs["1"].artifact
    )


def test_the_registrations_audit_entry_names_the_digest(alice, iris, iris_specs):
    post_json(
        client_for(alice), "/api/models/iris/versions", file_version(iris_specs["1"].artifact)
    )

    entry = AuditEntry.objects.get(action="register_version")
    assert entry.details["artifact_digest"] == digest_of(iris_specs["1"].artifact)


def test_a_python_factory_version_has_no_digest(alice, iris):
    document = post_json(client_for(alice), "/api/models/iris/versions", NEW_VERSION).json()

    assert document["artifact_digest"] == ""


def test_a_client_cannot_give_a_version_its_digest(alice, iris, iris_specs):
    body = {**file_version(iris_specs["1"].artifact), "artifact_digest": "sha256:" + "0" * 64}

    response = post_json(client_for(alice), "/api/models/iris/versions", body)

    assert response.status_code == 400
    assert response.json()["fields"] == {"artifact_digest": "unknown field"}
    assert not ModelVersion.objects.filter(version="4").exists()
