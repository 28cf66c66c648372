"""The admin site: version records managed, the rest read-only, changes through the domain."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from swaps import audit, rollbacks, tokens
from swaps.models import AuditEntry, ModelVersion, RollbackRequest, ServedModel
from swaps.refusals import Forbidden

from .control_plane import APPROVER, OPERATOR, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    admin = User.objects.create_superuser("root", "root@example.com", None)
    client.force_login(admin)
    return client


def staff(username: str, *codenames: str) -> User:
    """A user who may open the admin, holding only the permissions `codenames`."""
    user = make_user(username, codenames)
    user.is_staff = True
    user.save()
    return user


@pytest.fixture
def entry(db) -> AuditEntry:
    return audit.audit(actor="alice", via="test", action="start_swap", outcome="accepted")


def test_the_audit_log_is_listed(admin_client, entry):
    response = admin_client.get("/admin/swaps/auditentry/")

    assert response.status_code == 200
    assert b"start_swap" in response.content


def test_the_audit_log_offers_no_add(admin_client, entry):
    assert admin_client.get("/admin/swaps/auditentry/add/").status_code == 403


def test_an_audit_entry_cannot_be_changed_from_the_admin(admin_client, entry):
    admin_client.post(f"/admin/swaps/auditentry/{entry.pk}/change/", {"outcome": "refused"})

    entry.refresh_from_db()
    assert entry.outcome == "accepted"


def test_an_audit_entry_cannot_be_deleted_from_the_admin(admin_client, entry):
    response = admin_client.post(f"/admin/swaps/auditentry/{entry.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_the_audit_log_offers_no_bulk_actions(admin_client, entry):
    response = admin_client.get("/admin/swaps/auditentry/")

    assert response.context["action_form"] is None


def test_the_active_version_is_not_editable_in_the_admin(admin_client, iris, candidate_version):
    admin_client.post(
        f"/admin/swaps/servedmodel/{iris.pk}/change/",
        {
            "description": "changed",
            "active_version": candidate_version.pk,
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "0",
        },
    )

    iris.refresh_from_db()
    assert (iris.description, iris.active_version.version) == ("changed", "1")


def test_requiring_approval_goes_through_the_domain_and_is_audited(admin_client, iris):
    admin_client.post(
        "/admin/swaps/servedmodel/",
        {"action": "require_approval", "_selected_action": [iris.pk]},
    )

    iris.refresh_from_db()
    assert iris.rollback_requires_approval
    assert AuditEntry.objects.get(action="set_rollback_approval").actor == "root"


@pytest.fixture
def gated(db) -> ServedModel:
    return ServedModel.objects.create(name="held", rollback_requires_approval=True)


def drop_approval(client, served: ServedModel):
    return client.post(
        "/admin/swaps/servedmodel/",
        {"action": "drop_approval", "_selected_action": [served.pk]},
    )


def test_the_approval_actions_are_not_offered_to_a_viewer(client, gated):
    client.force_login(staff("viewer", "view_servedmodel"))

    page = client.get("/admin/swaps/servedmodel/").content.decode()

    assert 'value="drop_approval"' not in page
    assert 'value="require_approval"' not in page


def test_a_forged_drop_approval_from_a_viewer_changes_nothing(client, gated):
    client.force_login(staff("viewer", "view_servedmodel"))

    drop_approval(client, gated)

    gated.refresh_from_db()
    assert gated.rollback_requires_approval


def test_an_operator_cannot_drop_the_approval_their_rollbacks_wait_for(client, gated):
    client.force_login(staff("alice", *OPERATOR, "view_servedmodel"))

    page = client.get("/admin/swaps/servedmodel/").content.decode()
    drop_approval(client, gated)

    assert 'value="drop_approval"' not in page
    gated.refresh_from_db()
    assert gated.rollback_requires_approval


def test_the_approval_actions_work_for_a_user_who_holds_the_right(client, gated):
    client.force_login(staff("carol", "view_servedmodel", "set_rollback_approval"))

    page = client.get("/admin/swaps/servedmodel/").content.decode()
    drop_approval(client, gated)

    assert 'value="drop_approval"' in page
    gated.refresh_from_db()
    assert not gated.rollback_requires_approval
    entry = AuditEntry.objects.get(action="set_rollback_approval")
    assert (entry.actor, entry.via, entry.outcome) == ("carol", "admin", "accepted")


def test_versions_are_listed_with_filters_and_search(admin_client, serving_version):
    response = admin_client.get("/admin/swaps/modelversion/?runtime=sklearn&q=iris")

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [serving_version]


def test_adding_a_version_registers_it_through_the_domain(admin_client, iris, engine):
    response = admin_client.post(
        "/admin/swaps/modelversion/add/",
        {
            "served_model": iris.pk,
            "version": "5",
            "runtime": "python",
            "artifact": "swaps.demo_models:broken_iris",
            "sample_input": "[[5.1, 3.5, 1.4, 0.2]]",
            "expected_output_shape": "[-1, 3]",
            "expected_output_dtype": "FP64",
            "memory_limit_bytes": "100000000",
            "inputs": "[]",
            "outputs": "[]",
        },
    )

    assert response.status_code == 302
    version = ModelVersion.objects.get(version="5")
    assert version.registered_by.username == "root"
    assert AuditEntry.objects.get(action="register_version").via == "admin"
    assert ("iris", "5") in engine.versions._specs


def test_adding_a_version_with_bad_fields_shows_the_domain_message(admin_client, iris):
    response = admin_client.post(
        "/admin/swaps/modelversion/add/",
        {
            "served_model": iris.pk,
            "version": "5",
            "runtime": "python",
            "artifact": "no-colon-here",
            "sample_input": "[[5.1]]",
            "expected_output_shape": "[-1]",
            "expected_output_dtype": "INT64",
            "memory_limit_bytes": "1000",
            "inputs": "[]",
            "outputs": "[]",
        },
    )

    assert response.status_code == 200
    assert "package.module:factory" in str(response.context["adminform"].form.errors)
    assert not ModelVersion.objects.filter(version="5").exists()


def test_a_registered_version_cannot_be_changed(admin_client, serving_version):
    response = admin_client.post(
        f"/admin/swaps/modelversion/{serving_version.pk}/change/", {"artifact": "/tmp/evil"}
    )

    serving_version.refresh_from_db()
    assert response.status_code == 403
    assert serving_version.artifact != "/tmp/evil"


def test_a_versions_digest_is_shown_read_only_and_never_asked_for(admin_client, serving_version):
    ModelVersion.objects.filter(pk=serving_version.pk).update(artifact_digest="sha256:" + "a" * 64)

    shown = admin_client.get(f"/admin/swaps/modelversion/{serving_version.pk}/change/")
    adding = admin_client.get("/admin/swaps/modelversion/add/")

    assert "sha256:" + "a" * 64 in shown.content.decode()
    assert 'name="artifact_digest"' not in shown.content.decode()
    assert "artifact_digest" not in adding.content.decode()


def test_swaps_are_read_only_with_their_transitions(admin_client, alice, served_before):
    swap = served_before.served_model.swaps.get()

    response = admin_client.get(f"/admin/swaps/swap/{swap.pk}/change/")

    assert response.status_code == 200
    assert b"draining" in response.content
    assert admin_client.get("/admin/swaps/swap/add/").status_code == 403


def test_a_rollback_request_is_approved_from_the_admin_through_the_domain(
    admin_client, alice, iris, served_before, engine
):
    ServedModel.objects.filter(pk=iris.pk).update(rollback_requires_approval=True)
    waiting = rollbacks.request_rollback(
        model="iris", target_version="1", reason="bad", user=alice, via="test"
    )

    admin_client.post(
        "/admin/swaps/rollbackrequest/",
        {"action": "approve", "_selected_action": [waiting.pk]},
    )

    assert RollbackRequest.objects.get().state == "approved"
    assert engine.route("iris") == "1"


@pytest.fixture
def waiting(alice, iris, served_before) -> RollbackRequest:
    """alice's rollback of iris to 1, waiting for another user's approval."""
    ServedModel.objects.filter(pk=iris.pk).update(rollback_requires_approval=True)
    return rollbacks.request_rollback(
        model="iris", target_version="1", reason="bad", user=alice, via="test"
    )


def test_rollback_decisions_are_not_offered_to_a_viewer(client, waiting):
    client.force_login(staff("viewer", "view_rollbackrequest"))

    page = client.get("/admin/swaps/rollbackrequest/").content.decode()

    assert 'value="approve"' not in page
    assert 'value="reject"' not in page


def test_a_forged_approval_from_a_viewer_changes_nothing(client, waiting, engine):
    client.force_login(staff("viewer", "view_rollbackrequest"))

    client.post(
        "/admin/swaps/rollbackrequest/",
        {"action": "approve", "_selected_action": [waiting.pk]},
    )

    waiting.refresh_from_db()
    assert waiting.state == "pending"
    assert engine.route("iris") == "2"


def test_rollback_decisions_are_offered_to_an_approver(client, waiting):
    client.force_login(staff("bob", *APPROVER, "view_rollbackrequest"))

    page = client.get("/admin/swaps/rollbackrequest/").content.decode()

    assert 'value="approve"' in page and 'value="reject"' in page


@pytest.fixture
def bobs_token(bob):
    token, _ = tokens.create_api_token(user=bob, name="ci", via="test")
    return token


def test_seeing_tokens_is_not_enough_to_revoke_another_users(alice, bobs_token):
    with pytest.raises(Forbidden, match="change_apitoken"):
        tokens.revoke_api_token(token=bobs_token, user=alice, via="test")

    bobs_token.refresh_from_db()
    assert bobs_token.revoked_at is None
    entry = AuditEntry.objects.get(action=tokens.REVOKE)
    assert (entry.actor, entry.outcome) == ("alice", "refused")


def test_a_user_may_revoke_their_own_token(bob, bobs_token):
    assert tokens.revoke_api_token(token=bobs_token, user=bob, via="test").revoked_at


def test_the_admin_offers_revoke_only_to_those_who_may(client, bob, bobs_token):
    viewer = make_user("viewer", ("view_apitoken",))
    viewer.is_staff = True
    viewer.save()
    client.force_login(viewer)

    page = client.get("/admin/swaps/apitoken/").content.decode()
    client.post(
        "/admin/swaps/apitoken/",
        {"action": "revoke", "_selected_action": [bobs_token.pk]},
    )

    assert 'value="revoke"' not in page
    bobs_token.refresh_from_db()
    assert bobs_token.revoked_at is None
