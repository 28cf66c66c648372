"""Retiring a version: no swap or rollback targets it and no form offers it; its records
and history stay, and restoring it undoes it."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from swaps import jobs, registry, rollbacks, swapping
from swaps.models import AuditEntry, ModelVersion, ServedModel
from swaps.refusals import Conflict, Forbidden, Invalid, NotFound

from .control_plane import client_for, post_json

pytestmark = pytest.mark.django_db


def retire(user, version: str, **options) -> ModelVersion:
    return registry.retire_version(model="iris", version=version, user=user, via="test", **options)


def test_a_retired_version_is_refused_as_a_swap_target_naming_why(alice, candidate_version):
    retire(alice, "2")

    with pytest.raises(Invalid) as refused:
        swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")

    assert refused.value.fields == {
        "to_version": "version '2' of model 'iris' is retired: restore it to swap to it"
    }


def test_a_retired_version_is_refused_as_a_rollback_target(alice, served_before):
    retire(alice, "1")

    with pytest.raises(Invalid) as refused:
        rollbacks.request_rollback(
            model="iris", target_version="1", reason="bad", user=alice, via="t"
        )

    assert "retired" in refused.value.fields["target_version"]


def test_a_request_whose_target_was_retired_since_cannot_be_approved(alice, bob, served_before):
    ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)
    request = rollbacks.request_rollback(
        model="iris", target_version="1", reason="bad", user=alice, via="t"
    )
    retire(alice, "1")

    with pytest.raises(Invalid):
        rollbacks.approve_rollback(request_id=request.pk, user=bob, via="t")

    assert ServedModel.objects.get(name="iris").active_version.version == "2"


def test_the_forms_offer_no_retired_version_and_the_table_marks_it(alice, served_before):
    retire(alice, "1")  # served before: a rollback target until now
    retire(alice, "3")  # never served: a swap target until now

    page = client_for(alice).get("/models/iris/").content.decode()

    swap_form = page.split('id="swap-form-iris"', 1)[1].split("</section>", 1)[0]
    assert '<option value="3"' not in swap_form and '<option value="1"' not in swap_form
    rollback = page.split('id="rollback-iris"', 1)[1].split("</section>", 1)[0]
    assert "Roll back to 1" not in rollback
    versions = page.split('id="versions-iris"', 1)[1].split("</section>", 1)[0]
    assert versions.count('class="tag retired"') == 2


def test_its_history_stays(alice, served_before):
    retire(alice, "1")

    history = client_for(alice).get("/models/iris/").content.decode()

    assert "Swap 1 → 2" in history


def test_the_serving_version_cannot_be_retired(alice, serving_version):
    with pytest.raises(Conflict) as refused:
        retire(alice, "1")

    assert refused.value.message == (
        "version '1' serves model 'iris': swap to another version before retiring it"
    )
    serving_version.refresh_from_db()
    assert serving_version.retired_at is None


def test_a_version_an_operation_under_way_uses_cannot_be_retired(alice, candidate_version):
    swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")

    with pytest.raises(Conflict, match="retire it once that operation has ended"):
        retire(alice, "2")


def test_retiring_needs_the_register_permission_and_changes_nothing(mallory, candidate_version):
    with pytest.raises(Forbidden):
        retire(mallory, "2")

    candidate_version.refresh_from_db()
    assert candidate_version.retired_at is None
    entry = AuditEntry.objects.get(action="retire_version")
    assert (entry.actor, entry.outcome) == ("mallory", "refused")


def test_a_restored_version_can_be_swapped_to_again(alice, candidate_version):
    retire(alice, "2")
    retire(alice, "2", restore=True)

    swap = swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")

    assert jobs.run_swap(swap.pk) == "completed"
    assert [e.action for e in AuditEntry.objects.filter(to_version="2").order_by("id")][:2] == [
        "retire_version",
        "restore_version",
    ]


def test_retiring_twice_or_restoring_a_version_in_service_is_refused(alice, candidate_version):
    with pytest.raises(Conflict, match="is not retired"):
        retire(alice, "2", restore=True)
    retire(alice, "2")
    with pytest.raises(Conflict, match="is retired already"):
        retire(alice, "2")
    with pytest.raises(NotFound):
        retire(alice, "9")


def test_the_api_retires_and_restores(alice, candidate_version):
    client = client_for(alice)

    retired = post_json(client, "/api/models/iris/versions/2/retire")
    assert retired.status_code == 200 and retired.json()["retired_at"] is not None
    assert post_json(client, "/api/models/iris/versions/2/retire").status_code == 409
    assert post_json(client, "/api/models/iris/versions/9/retire").status_code == 404
    restored = post_json(client, "/api/models/iris/versions/2/restore")
    assert restored.status_code == 200 and restored.json()["retired_at"] is None


def test_the_cli_retires_and_restores(alice, candidate_version):
    out = StringIO()
    call_command("retire_version", "iris", "2", "--user", "alice", stdout=out)
    call_command("retire_version", "iris", "2", "--restore", "--user", "alice", stdout=out)

    assert out.getvalue().splitlines() == ["iris 2 retired", "iris 2 restored"]
