"""Bad input gets a 4xx with a message, and writes nothing but its audit entry."""

from __future__ import annotations

import json

import pytest

from swaps.models import AuditEntry, ModelVersion, RollbackRequest, Swap

from .control_plane import client_for, post_json

pytestmark = pytest.mark.django_db


def nothing_but_audit() -> bool:
    return not (Swap.objects.exists() or RollbackRequest.objects.exists())


def test_malformed_json_gets_400(alice, iris):
    response = client_for(alice).post(
        "/api/models/iris/swaps", data="{not json", content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"].startswith("the request body is not valid JSON")
    assert nothing_but_audit()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_and_get_400(alice, iris, constant):
    # Python's json reads them; the audit log's JSON column then refused the row (a 500).
    body = f'{{"target_version": [], "reason": {constant}}}'
    response = client_for(alice).post(
        "/api/models/iris/rollbacks", data=body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"] == (
        f"the request body is not valid JSON: {constant} is not a JSON value"
    )
    assert nothing_but_audit()


def test_a_json_list_gets_400(alice, iris):
    response = post_json(client_for(alice), "/api/models/iris/swaps", ["1", "2"])

    assert response.json()["error"] == "the request body must be a JSON object"


def test_an_unknown_field_gets_400_naming_it(alice, iris):
    response = post_json(
        client_for(alice), "/api/models/iris/swaps", {"from_version": "1", "to_verison": "2"}
    )

    assert response.status_code == 400
    assert response.json()["fields"] == {"to_verison": "unknown field"}


def test_an_oversized_body_gets_413(alice, iris, settings):
    settings.HOTSWAP_API_MAX_BODY_BYTES = 100
    body = {"from_version": "1", "to_version": "2" * 200}

    response = post_json(client_for(alice), "/api/models/iris/swaps", body)

    assert response.status_code == 413
    assert response.json()["error"] == "the request body is larger than 100 bytes"
    assert nothing_but_audit()


def test_each_bad_request_is_audited_as_refused(alice, iris):
    client = client_for(alice)
    client.post("/api/models/iris/swaps", data="{", content_type="application/json")
    post_json(client, "/api/models/iris/rollbacks", {"target_version": 1})

    assert list(AuditEntry.objects.values_list("action", "outcome").order_by("id")) == [
        ("start_swap", "refused"),
        ("request_rollback", "refused"),
    ]


def test_a_refusal_records_its_message_in_the_audit_entry(alice, iris):
    client_for(alice).post("/api/models/iris/swaps", data="{", content_type="application/json")

    assert AuditEntry.objects.get().details["error"].startswith("the request body is not valid")


def test_registering_a_version_with_bad_fields_names_every_one(alice, iris):
    response = post_json(
        client_for(alice),
        "/api/models/iris/versions",
        {
            "version": "4",
            "runtime": "tensorflow",
            "artifact": "",
            "sample_input": "5.1,3.5",
            "expected_output_shape": [-1, "x"],
            "expected_output_dtype": "int",
            "memory_limit_bytes": -5,
        },
    )

    assert response.status_code == 400
    assert set(response.json()["fields"]) == {
        "runtime",
        "artifact",
        "sample_input",
        "expected_output_shape",
        "expected_output_dtype",
        "memory_limit_bytes",
    }
    assert not ModelVersion.objects.filter(version="4").exists()


def test_a_rollback_with_a_non_string_reason_gets_400(alice, iris):
    response = post_json(
        client_for(alice), "/api/models/iris/rollbacks", {"target_version": "1", "reason": 7}
    )

    assert response.status_code == 400
    assert "reason" in response.json()["fields"]


def test_an_empty_body_is_an_empty_object(alice, iris):
    response = client_for(alice).post("/api/models/iris/swaps", data=b"", content_type="")

    assert response.json()["fields"] == {"to_version": "must be a version name, a string"}


def test_a_body_that_is_not_utf8_gets_400(alice, iris):
    response = client_for(alice).post(
        "/api/models/iris/swaps", data=b'{"a": "\xff"}', content_type="application/json"
    )

    assert response.status_code == 400


def test_json_nested_too_deep_to_parse_gets_400(alice, iris):
    response = client_for(alice).post(
        "/api/models/iris/swaps", data="[" * 50_000, content_type="application/json"
    )

    assert response.status_code == 400
    assert json.loads(response.content)["error"].startswith("the request body is not valid")


def test_a_field_name_with_a_nul_character_gets_400_and_its_audit_row(alice, iris):
    # PostgreSQL refuses NUL in text and JSON; the refusal must still be recorded.
    client = client_for(alice)
    response = post_json(client, "/api/models/iris/versions", {"bad\u0000field": 1})

    assert response.status_code == 400
    assert AuditEntry.objects.filter(outcome__startswith="refused").exists()


@pytest.mark.parametrize(
    "path",
    [
        "/api/models/iris/swaps",
        "/api/models/iris/versions",
        "/api/models/iris/rollbacks",
        "/api/models/iris/versions/2/retire",
    ],
)
def test_without_the_permission_any_body_gets_403_not_a_400_about_it(mallory, iris, path):
    body = {f"field_{n}": "x" * 100 for n in range(900)}  # nothing mallory may send

    response = post_json(client_for(mallory), path, body)

    assert response.status_code == 403, response.json()
    assert "may not" in response.json()["error"]
    assert nothing_but_audit()
    assert len(AuditEntry.objects.get().details.get("fields", {})) == 0  # no body stored
