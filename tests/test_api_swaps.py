"""POST /api/models/<model>/swaps and GET /api/swaps/<id>."""

from __future__ import annotations

import pytest

from swaps import jobs
from swaps.models import AuditEntry, Swap

from .control_plane import client_for, post_json

pytestmark = pytest.mark.django_db

SWAP = {"from_version": "1", "to_version": "2"}


def swap(user, body=SWAP, model="iris"):
    return post_json(client_for(user), f"/api/models/{model}/swaps", body)


def test_a_swap_is_accepted_with_202_and_its_record(alice, candidate_version):
    response = swap(alice)

    assert response.status_code == 202
    document = response.json()
    assert (document["state"], document["from_version"], document["to_version"]) == (
        "pending",
        "1",
        "2",
    )
    assert document["id"] == Swap.objects.get().pk


def test_a_second_swap_while_one_runs_gets_409(alice, candidate_version):
    swap(alice)

    response = swap(alice, {"from_version": "1", "to_version": "3"})

    assert response.status_code == 409
    assert "already running" in response.json()["error"]


def test_an_unknown_model_gets_404(alice, iris):
    response = swap(alice, model="nope")

    assert response.status_code == 404
    assert response.json()["error"] == "model 'nope' does not exist"


def test_an_unknown_version_gets_400_naming_the_field(alice, iris):
    response = swap(alice, {"from_version": "1", "to_version": "9"})

    assert response.status_code == 400
    assert response.json()["fields"] == {"to_version": "model 'iris' has no version '9'"}


def test_the_same_from_and_to_gets_400(alice, iris):
    response = swap(alice, {"from_version": "1", "to_version": "1"})

    assert response.status_code == 400
    assert response.json()["fields"] == {"to_version": "is the same as from_version"}


def test_wrong_types_get_400_naming_each_field(alice, iris):
    response = swap(alice, {"from_version": 1, "to_version": ["2"]})

    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"from_version", "to_version"}


def test_a_missing_to_version_gets_400(alice, iris):
    response = swap(alice, {"from_version": "1"})

    assert response.json()["fields"] == {"to_version": "must be a version name, a string"}


def test_the_swap_record_shows_where_the_swap_is(alice, candidate_version):
    swap_id = swap(alice).json()["id"]
    jobs.run_swap(swap_id)

    document = client_for(alice).get(f"/api/swaps/{swap_id}").json()

    assert document["state"] == "completed"
    states = [t["state"] for t in document["transitions"]]
    # No worker listens here (the test runs the job): Pending says so in a second row.
    assert states[:3] == ["pending", "pending", "swapping"]
    assert "no worker listens" in document["transitions"][1]["message"]


def test_an_unknown_swap_gets_404(alice, iris):
    response = client_for(alice).get("/api/swaps/999")

    assert (response.status_code, response.json()["error"]) == (404, "swap 999 does not exist")


def test_a_get_on_the_swaps_path_gets_405(alice, iris):
    response = client_for(alice).get("/api/models/iris/swaps")

    assert (response.status_code, response["Allow"]) == (405, "POST")


def test_a_refused_swap_writes_nothing_but_its_audit_entry(alice, iris):
    swap(alice, {"from_version": "1", "to_version": "1"})

    assert not Swap.objects.exists()
    assert list(AuditEntry.objects.values_list("action", "outcome")) == [("start_swap", "refused")]


def test_a_forced_swap_is_accepted_with_its_reason_on_the_record(alice, candidate_version):
    response = swap(alice, {**SWAP, "force": "clients read 'label' since the last release"})

    assert response.status_code == 202
    assert response.json()["forced_reason"] == "clients read 'label' since the last release"


def test_force_without_a_reason_gets_400_naming_it(alice, candidate_version):
    response = swap(alice, {**SWAP, "force": True})

    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"force"}
    assert not Swap.objects.exists()
