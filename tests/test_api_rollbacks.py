"""POST /api/models/<model>/rollbacks, /api/rollbacks/<id>/approve and /reject."""

from __future__ import annotations

import pytest

from swaps.models import ServedModel

from .control_plane import client_for, post_json

pytestmark = pytest.mark.django_db

ROLLBACK = {"target_version": "1", "reason": "version 2 is wrong about setosa"}


@pytest.fixture
def approval_required(iris):
    ServedModel.objects.filter(pk=iris.pk).update(rollback_requires_approval=True)


def test_a_rollback_gets_202_already_flipped(alice, served_before, engine):
    response = post_json(client_for(alice), "/api/models/iris/rollbacks", ROLLBACK)

    assert response.status_code == 202
    assert (response.json()["state"], response.json()["swap"]["state"]) == ("approved", "draining")
    assert engine.route("iris") == "1"


def test_a_rollbacks_answer_says_what_the_records_say(alice, bob, served_before, engine):
    # The answer is built from what the flip wrote, not read back: it must not differ.
    answer = post_json(client_for(alice), "/api/models/iris/rollbacks", ROLLBACK).json()

    assert client_for(bob).get(f"/api/rollbacks/{answer['id']}").json() == answer


def test_an_approvals_answer_says_what_the_records_say(
    alice, bob, served_before, approval_required, engine
):
    request_id = post_json(client_for(alice), "/api/models/iris/rollbacks", ROLLBACK).json()["id"]

    answer = post_json(client_for(bob), f"/api/rollbacks/{request_id}/approve").json()

    assert client_for(alice).get(f"/api/rollbacks/{request_id}").json() == answer


def test_a_rollback_whose_target_fails_its_health_check_gets_409_saying_why(
    alice, served_before, unhealthy_target
):
    response = post_json(client_for(alice), "/api/models/iris/rollbacks", ROLLBACK)

    assert response.status_code == 409
    assert "routing is unchanged" in response.json()["error"]
    assert unhealthy_target in response.json()["error"]


def test_a_gated_rollback_gets_202_pending_approval(alice, served_before, approval_required):
    response = post_json(client_for(alice), "/api/models/iris/rollbacks", ROLLBACK)

    assert response.status_code == 202
    assert (response.json()["state"], response.json()["swap"]) == ("pending", None)


def test_approval_gets_202_with_the_rollback_under_way(
    alice, bob, served_before, approval_required, engine
):
    request_id = post_json(client_for(alice), "/api/models/iris/rollbacks", ROLLBACK).json()["id"]

    response = post_json(client_for(bob), f"/api/rollbacks/{request_id}/approve")

    assert response.status_code == 202
    assert (response.json()["decided_by"], response.json()["swap"]["state"]) == ("bob", "draining")
    assert engine.route("iris") == "1"


def test_approving_your_own_request_gets_403(bob, served_before, approval_required):
    request_id = post_json(client_for(bob), "/api/models/iris/rollbacks", ROLLBACK).json()["id"]

    response = post_json(client_for(bob), f"/api/rollbacks/{request_id}/approve")

    assert response.status_code == 403


def test_rejection_gets_200_and_changes_nothing(
    alice, bob, served_before, approval_required, engine
):
    request_id = post_json(client_for(alice), "/api/models/iris/rollbacks", ROLLBACK).json()["id"]

    response = post_json(client_for(bob), f"/api/rollbacks/{request_id}/reject")

    assert (response.status_code, response.json()["state"]) == (200, "rejected")
    assert engine.route("iris") == "2"


def test_approving_twice_gets_409(alice, bob, served_before, approval_required):
    request_id = post_json(client_for(alice), "/api/models/iris/rollbacks", ROLLBACK).json()["id"]
    post_json(client_for(bob), f"/api/rollbacks/{request_id}/approve")

    response = post_json(client_for(bob), f"/api/rollbacks/{request_id}/approve")

    assert response.status_code == 409


def test_approving_an_unknown_request_gets_404(bob, iris):
    response = post_json(client_for(bob), "/api/rollbacks/999/approve")

    assert response.status_code == 404


def test_a_rollback_request_can_be_read_back(alice, served_before, approval_required):
    request_id = post_json(client_for(alice), "/api/models/iris/rollbacks", ROLLBACK).json()["id"]

    document = client_for(alice).get(f"/api/rollbacks/{request_id}").json()

    assert (document["reason"], document["requested_by"]) == (ROLLBACK["reason"], "alice")


def test_a_rollback_needs_the_request_permission(mallory, served_before):
    response = post_json(client_for(mallory), "/api/models/iris/rollbacks", ROLLBACK)

    assert response.status_code == 403


def test_an_anonymous_approval_gets_401(alice, served_before, approval_required):
    request_id = post_json(client_for(alice), "/api/models/iris/rollbacks", ROLLBACK).json()["id"]

    response = post_json(client_for(None), f"/api/rollbacks/{request_id}/approve")

    assert response.status_code == 401
