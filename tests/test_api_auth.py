"""Who the API lets in: session (with CSRF) or bearer token; nobody anonymous."""

from __future__ import annotations

import pytest

from swaps import anonymous_audit, tokens
from swaps.models import AuditEntry, Swap

from .control_plane import client_for, post_json

pytestmark = pytest.mark.django_db

SWAP = {"from_version": "1", "to_version": "2"}


def bearer(secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


@pytest.fixture
def alice_token(alice) -> str:
    _, secret = tokens.create_api_token(user=alice, name="ci", via="test")
    return secret


def test_an_anonymous_read_gets_401(iris):
    response = client_for(None).get("/api/models")

    assert response.status_code == 401
    assert response.json()["error"].startswith("authentication required")


def test_an_anonymous_swap_gets_401_and_changes_nothing(candidate_version):
    response = post_json(client_for(None), "/api/models/iris/swaps", SWAP)

    assert response.status_code == 401
    assert not Swap.objects.exists()


def test_an_anonymous_swap_attempt_is_audited(candidate_version):
    post_json(client_for(None), "/api/models/iris/swaps", SWAP)

    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.outcome, entry.model) == (
        "anonymous",
        "start_swap",
        "refused",
        "iris",
    )


def test_a_flood_of_anonymous_attempts_is_folded_not_written_one_by_one(
    candidate_version, monkeypatch
):
    # Before, 200 anonymous POSTs wrote 200 entries and pushed everything else out of
    # the model's audit panel.
    clock = [1000.0]
    monkeypatch.setattr(anonymous_audit, "monotonic", lambda: clock[0])
    kept, folded = anonymous_audit.ANONYMOUS_KEPT, 30
    flood = client_for(None)
    for _ in range(kept + folded):
        assert post_json(flood, "/api/models/iris/swaps", SWAP).status_code == 401
    elsewhere = post_json(client_for(None), "/api/models/iris/swaps", SWAP, REMOTE_ADDR="10.9.8.7")
    clock[0] += anonymous_audit.WINDOW_SECONDS
    post_json(flood, "/api/models/iris/swaps", SWAP)

    entries = list(AuditEntry.objects.filter(actor="anonymous").order_by("sequence"))
    assert elsewhere.status_code == 401
    assert len(entries) == kept + 2  # the flood's first, the other address, the next window
    assert entries[-1].details["unrecorded_before"] == folded
    assert not any("unrecorded_before" in e.details for e in entries[:-1])


def test_a_bearer_token_authenticates_a_swap(alice_token, candidate_version):
    response = post_json(client_for(None), "/api/models/iris/swaps", SWAP, **bearer(alice_token))

    assert response.status_code == 202
    assert response.json()["requested_by"] == "alice"


def test_a_token_request_is_audited_as_coming_from_the_api(alice_token, candidate_version):
    post_json(client_for(None), "/api/models/iris/swaps", SWAP, **bearer(alice_token))

    assert AuditEntry.objects.get(action="start_swap").via == "api"


def test_a_token_request_needs_no_csrf_token(alice_token, candidate_version):
    client = client_for(None, csrf_checks=True)

    response = post_json(client, "/api/models/iris/swaps", SWAP, **bearer(alice_token))

    assert response.status_code == 202


def test_a_revoked_token_gets_401(alice, alice_token, candidate_version):
    token = alice.api_tokens.get()
    tokens.revoke_api_token(token=token, user=alice, via="test")

    response = post_json(client_for(None), "/api/models/iris/swaps", SWAP, **bearer(alice_token))

    assert response.status_code == 401
    assert response.json()["error"] == "the API token is not valid (unknown or revoked)"


def test_an_unknown_token_gets_401(candidate_version):
    response = client_for(None).get("/api/models", **bearer("hs_not-a-token"))

    assert response.status_code == 401


def test_another_authorization_scheme_gets_401(candidate_version):
    response = client_for(None).get("/api/models", HTTP_AUTHORIZATION="Basic YWxpY2U6eA==")

    assert response.json() == {"error": "use Authorization: Bearer <token>", "fields": {}}


def test_a_session_swap_without_csrf_token_gets_403(alice, candidate_version):
    client = client_for(alice, csrf_checks=True)

    response = post_json(client, "/api/models/iris/swaps", SWAP)

    assert response.status_code == 403
    assert response.json()["error"].startswith("CSRF check failed")
    assert not Swap.objects.exists()


def test_a_refused_csrf_check_is_audited_under_the_session_user(alice, candidate_version):
    post_json(client_for(alice, csrf_checks=True), "/api/models/iris/swaps", SWAP)

    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.via, entry.outcome) == ("alice", "session", "refused")


def test_a_session_swap_with_the_csrf_token_is_accepted(alice, candidate_version):
    client = client_for(alice, csrf_checks=True)
    client.get("/api/models")  # a page visit: the browser gets its csrftoken cookie
    csrf = client.cookies.get("csrftoken")
    if csrf is None:  # the API sets no cookie of its own; the console page does
        from django.middleware.csrf import _get_new_csrf_string

        client.cookies["csrftoken"] = csrf_value = _get_new_csrf_string()
    else:
        csrf_value = csrf.value

    response = post_json(client, "/api/models/iris/swaps", SWAP, HTTP_X_CSRFTOKEN=csrf_value)

    assert response.status_code == 202


def test_a_session_read_needs_no_csrf_token(alice, iris):
    response = client_for(alice, csrf_checks=True).get("/api/models")

    assert response.status_code == 200


def test_a_signed_in_user_without_the_permission_gets_403(mallory, candidate_version):
    response = post_json(client_for(mallory), "/api/models/iris/swaps", SWAP)

    assert response.status_code == 403
    assert "swaps.start_swap" in response.json()["error"]


def test_a_refused_permission_is_audited_once(mallory, candidate_version):
    post_json(client_for(mallory), "/api/models/iris/swaps", SWAP)

    assert list(AuditEntry.objects.values_list("actor", "outcome")) == [("mallory", "refused")]


def test_a_token_is_stored_only_as_its_digest(alice, alice_token):
    token = alice.api_tokens.get()

    assert token.digest == tokens.digest(alice_token)
    assert alice_token not in (token.digest, token.prefix, token.name)


def test_using_a_token_records_when(alice, alice_token, iris):
    client_for(None).get("/api/models", **bearer(alice_token))

    assert alice.api_tokens.get().last_used_at is not None
