"""The console's pages and forms: who gets in, what they see, and refusals shown in place."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.utils.timezone import now

from swaps import rollbacks
from swaps.console import HISTORY_LENGTH
from swaps.engine.fleet_keys import FleetKeys
from swaps.engine.reports import ReplicaReport, sealed_report
from swaps.engine.results import HealthCheckResult, utcnow
from swaps.models import RollbackRequest, ServedModel, Swap
from tests.processes import fleet_seal

from .control_plane import client_for

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
SWAP = {"from_version": "1", "to_version": "2"}
ROLLBACK = {"target_version": "1", "reason": "version 2 is wrong about setosa"}


@pytest.fixture
def approval_required(iris):
    ServedModel.objects.filter(pk=iris.pk).update(rollback_requires_approval=True)


@pytest.fixture
def waiting_request(alice, served_before, approval_required) -> RollbackRequest:
    return rollbacks.request_rollback(model="iris", **ROLLBACK, user=alice, via="test")


# -- pages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/models/iris/", "/approvals/"])
def test_pages_send_anonymous_visitors_to_log_in(client, iris, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_the_dashboard_shows_each_model_with_the_version_it_serves(alice, iris):
    page = client_for(alice).get("/").content.decode()

    assert 'id="model-card-iris"' in page
    assert 'data-served="1"' in page


@pytest.mark.parametrize(("minutes_ago", "badge"), [(1, "Failed"), (60, "Idle")])
def test_a_failed_operations_badge_gives_way_to_the_model_as_it_is(alice, iris, minutes_ago, badge):
    finished = now() - timedelta(minutes=minutes_ago)
    reason = "version 2 failed its health check on replica-a"
    failed = Swap.objects.create(
        served_model=iris,
        from_version=iris.versions.get(version="1"),
        to_version=iris.versions.get(version="2"),
        state=Swap.State.FAILED,
        message=reason,
        finished_at=finished,
    )
    failed.transitions.create(state=Swap.State.FAILED, message=reason, at=finished)

    for page in ("/", "/models/iris/"):
        html = client_for(alice).get(page).content.decode()
        card = html.split('id="swap-state-iris"', 1)[1].split("</div>", 1)[0]
        assert f'<span class="icon" aria-hidden="true"></span>{badge}</span>' in card

    # The failure itself stays where the model's operations are listed.
    assert reason in client_for(alice).get("/models/iris/history/").content.decode()


def test_the_dashboard_connects_to_the_dashboard_websocket(alice, iris):
    page = client_for(alice).get("/").content.decode()

    assert 'ws-connect="/ws/dashboard/"' in page


def test_the_model_page_has_every_live_fragment(alice, iris):
    page = client_for(alice).get("/models/iris/").content.decode()

    for fragment in ("swap-state", "pending", "swap-form", "rollback", "history", "audit"):
        assert f'id="{fragment}-iris"' in page


def test_the_model_page_lists_every_version(alice, iris):
    page = client_for(alice).get("/models/iris/").content.decode()

    assert all(f'<th scope="row">{v}' in page for v in "123")


def test_an_unknown_model_is_not_found(alice, db):
    assert client_for(alice).get("/models/nope/").status_code == 404


def test_the_approvals_queue_is_forbidden_without_the_approve_permission(alice, iris):
    response = client_for(alice).get("/approvals/")

    assert response.status_code == 403
    assert "may not see the queue" in response.content.decode()


def test_the_approvals_queue_shows_waiting_requests_to_an_approver(bob, waiting_request):
    page = client_for(bob).get("/approvals/").content.decode()

    assert f'id="approval-{waiting_request.pk}"' in page


def test_the_approvals_queue_shows_the_targets_health_who_asked_and_how_long_ago(
    bob, waiting_request, control_plane, redis_url
):
    keys, now = FleetKeys(control_plane), utcnow()
    check = HealthCheckResult.failure(
        model_id="iris", version="1", reason="output 'label' has shape (2,)", replica="replica-a"
    )
    report = ReplicaReport(
        "replica-a", "", 1, now, now, incarnation="", health={"iris": {"1": check}}
    )
    with redis.Redis.from_url(redis_url) as client:
        client.set(keys.report("replica-a"), sealed_report(fleet_seal(), keys, report), px=60_000)
        client.sadd(keys.replicas, "replica-a")

    page = client_for(bob).get("/approvals/").content.decode()
    entry = page.split(f'id="approval-{waiting_request.pk}"', 1)[1].split("</li>", 1)[0]

    assert "requested by alice" in entry and "0\xa0minutes ago" in entry
    assert "Unhealthy</strong> on replica-a (not loaded there now)" in entry
    assert "output &#x27;label&#x27; has shape (2,)" in entry


def test_the_approvals_queue_says_when_the_fleet_cannot_be_read(bob, waiting_request, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    page = client_for(bob).get("/approvals/").content.decode()

    assert f'id="approval-{waiting_request.pk}"' in page
    assert "the targets' health checks are unknown" in page


def test_older_history_is_a_page_away_and_the_model_page_shows_the_newest(alice, iris):
    for n in range(HISTORY_LENGTH + 3):
        failed = Swap.objects.create(
            served_model=iris,
            kind=Swap.Kind.SWAP,
            from_version=iris.versions.get(version="1"),
            to_version=iris.versions.get(version="2"),
            state=Swap.State.FAILED,
        )
        failed.transitions.create(state=Swap.State.FAILED, message=f"attempt {n}.", at=now())

    live = client_for(alice).get("/models/iris/").content.decode()
    older = client_for(alice).get("/models/iris/history/?page=2").content.decode()

    assert "attempt 12." in live and "attempt 0." not in live
    assert 'href="/models/iris/history/?page=2" rel="next">Older operations' in live
    assert "attempt 0." in older and "attempt 12." not in older and "page 2 of 2" in older


def test_the_history_names_who_approved_a_rollback_and_why_it_was_asked(
    alice, bob, waiting_request
):
    rollbacks.approve_rollback(request_id=waiting_request.pk, user=bob, via="test")

    page = client_for(alice).get("/models/iris/").content.decode()
    history = page.split('id="history-iris"', 1)[1].split("</section>", 1)[0]
    rollback = history.split("<li data-swap", 2)[1]  # the newest operation: the rollback

    assert "by alice, approved by bob," in " ".join(rollback.split())
    assert "Reason: version 2 is wrong about setosa" in rollback


def test_the_archive_pages_need_a_login_and_a_known_model(alice, iris):
    assert client_for(None).get("/models/iris/audit/").status_code == 302
    assert client_for(alice).get("/models/nope/audit/").status_code == 404
    assert client_for(alice).get("/models/iris/audit/?page=x").status_code == 200


# -- swaps ------------------------------------------------------------------------------------


def test_the_swap_form_can_force_a_swap_saying_why(alice, candidate_version):
    page = client_for(alice).get("/models/iris/").content.decode()
    assert 'name="force"' in page

    forced = {**SWAP, "force": "  every client sends the new names  "}
    response = client_for(alice).post("/models/iris/swap", forced, **HTMX)

    assert "Forced, even if it breaks clients: every client sends the new names" in (
        response.content.decode()
    )
    assert Swap.objects.get().forced_reason == "every client sends the new names"


def test_an_empty_force_field_forces_nothing(alice, candidate_version):
    client_for(alice).post("/models/iris/swap", {**SWAP, "force": " "}, **HTMX)

    assert Swap.objects.get().forced_reason == ""


def test_a_swap_from_the_form_is_accepted(alice, candidate_version):
    response = client_for(alice).post("/models/iris/swap", SWAP, **HTMX)

    swap = Swap.objects.get()
    assert response.status_code == 200
    # The notice outlives the swap's progress on the page: it says only what stays true.
    assert f"Swap {swap.pk} to version 2 accepted at " in response.content.decode()
    assert "is being" not in response.content.decode()
    assert swap.state == "pending"


def test_the_swap_answer_is_the_swap_form_fragment(alice, candidate_version):
    response = client_for(alice).post("/models/iris/swap", SWAP, **HTMX)

    assert response.content.decode().strip().startswith('<section id="swap-form-iris"')


def test_a_swap_posted_without_script_redirects_to_the_model_page(alice, candidate_version):
    response = client_for(alice).post("/models/iris/swap", SWAP)

    assert (response.status_code, response["Location"]) == (302, "/models/iris/")


def test_a_swap_without_permission_is_refused_in_the_form(mallory, candidate_version):
    response = client_for(mallory).post("/models/iris/swap", SWAP, **HTMX)

    assert response.status_code == 403
    assert "may not start a swap" in response.content.decode()
    assert not Swap.objects.exists()


def test_a_swap_while_another_runs_is_a_conflict_shown_in_the_form(alice, candidate_version):
    client_for(alice).post("/models/iris/swap", SWAP, **HTMX)

    response = client_for(alice).post("/models/iris/swap", SWAP, **HTMX)

    assert response.status_code == 409
    assert 'id="swap-form-iris"' in response.content.decode()
    assert "already running" in response.content.decode()


def test_a_swap_from_a_version_no_longer_served_is_refused_in_the_form(alice, candidate_version):
    response = client_for(alice).post("/models/iris/swap", {**SWAP, "from_version": "3"}, **HTMX)

    assert response.status_code == 400
    assert "serves version &#x27;1&#x27;, not &#x27;3&#x27;" in response.content.decode()


def test_a_refused_swap_without_script_shows_the_whole_page_with_the_error(mallory, iris):
    response = client_for(mallory).post("/models/iris/swap", SWAP)

    page = response.content.decode()
    assert response.status_code == 403
    assert 'id="history-iris"' in page and "may not start a swap" in page


def test_a_swap_from_an_ended_session_tells_htmx_to_go_to_the_login_page(client, iris):
    response = client.post("/models/iris/swap", SWAP, **HTMX)

    assert response.status_code == 401
    assert response["HX-Redirect"].startswith("/accounts/login/")


def test_a_swap_by_get_is_not_allowed(alice, iris):
    assert client_for(alice).get("/models/iris/swap").status_code == 405


# -- rollbacks --------------------------------------------------------------------------------


def test_a_rollback_without_approval_flips_at_once(alice, served_before, engine):
    response = client_for(alice).post("/models/iris/rollback", ROLLBACK, **HTMX)

    assert response.status_code == 200
    assert engine.route("iris") == "1"


def test_a_gated_rollback_says_it_waits_for_approval(alice, served_before, approval_required):
    response = client_for(alice).post("/models/iris/rollback", ROLLBACK, **HTMX)

    assert "waits for another user&#x27;s approval" in response.content.decode()
    assert RollbackRequest.objects.get().state == "pending"


def test_a_rollback_without_a_reason_is_refused_in_the_rollback_form(alice, served_before):
    response = client_for(alice).post("/models/iris/rollback", {"target_version": "1"}, **HTMX)

    assert response.status_code == 400
    assert 'id="rollback-iris"' in response.content.decode()
    assert "say why" in response.content.decode()


def test_a_rollback_without_permission_is_refused(mallory, served_before):
    response = client_for(mallory).post("/models/iris/rollback", ROLLBACK, **HTMX)

    assert response.status_code == 403
    assert not RollbackRequest.objects.exists()


def test_the_model_page_offers_a_rollback_to_each_version_served_before(alice, served_before):
    page = client_for(alice).get("/models/iris/").content.decode()

    assert 'name="target_version" value="1"' in page
    assert 'name="target_version" value="3"' not in page


# -- approvals --------------------------------------------------------------------------------


def test_an_approver_approves_with_one_click(bob, waiting_request, engine):
    response = client_for(bob).post(f"/rollbacks/{waiting_request.pk}/approve", **HTMX)

    assert response.status_code == 200
    assert engine.route("iris") == "1"


def test_approving_your_own_request_is_refused_in_the_queue(alice, bob, served_before, engine):
    ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)
    own = rollbacks.request_rollback(model="iris", **ROLLBACK, user=bob, via="test")

    response = client_for(bob).post(f"/rollbacks/{own.pk}/approve", **HTMX)

    assert response.status_code == 403
    assert 'id="approvals"' in response.content.decode()
    assert "nobody approves or rejects their own" in response.content.decode()
    assert engine.route("iris") == "2"


def test_approving_without_the_permission_is_refused(alice, waiting_request):
    response = client_for(alice).post(f"/rollbacks/{waiting_request.pk}/approve", **HTMX)

    assert response.status_code == 403
    assert "may not approve a rollback" in response.content.decode()


def test_approving_an_unknown_request_is_not_found(bob, db):
    assert client_for(bob).post("/rollbacks/999/approve", **HTMX).status_code == 404


def test_a_rejection_leaves_the_route_alone(bob, waiting_request, engine):
    response = client_for(bob).post(f"/rollbacks/{waiting_request.pk}/reject", **HTMX)

    waiting_request.refresh_from_db()
    assert response.status_code == 200
    assert (waiting_request.state, engine.route("iris")) == ("rejected", "2")


def test_a_decision_without_script_redirects_to_the_queue(bob, waiting_request):
    response = client_for(bob).post(f"/rollbacks/{waiting_request.pk}/reject")

    assert (response.status_code, response["Location"]) == (302, "/approvals/")


def test_the_versions_table_shows_a_failed_check_of_a_version_no_longer_loaded(
    alice, iris, monkeypatch
):
    from swaps import fleet_reports
    from swaps.engine.results import HealthCheckResult

    failed = HealthCheckResult.failure(
        model_id="iris", version="3", reason="output has shape (1, 3)", replica="r1"
    )
    monkeypatch.setattr(fleet_reports, "health_by_version", lambda model: {"3": [(failed, False)]})

    page = client_for(alice).get("/models/iris/").content.decode()

    row = page.split('<th scope="row">3', 1)[1].split("</tr>", 1)[0]
    assert "Unhealthy</strong> on r1 (not loaded there now)" in row
    assert "Reason: output has shape (1, 3)" in row
