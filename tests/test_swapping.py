"""Swaps: accepted with a record and a queued job, run by the job, every step recorded."""

from __future__ import annotations

from dataclasses import replace

import pytest

from swaps import audit, jobs, swapping
from swaps.models import AuditEntry, ServedModel, Swap, SwapTransition
from swaps.refusals import Conflict, Forbidden, Invalid, NotAuthenticated, NotFound

from .control_plane import add_version

pytestmark = pytest.mark.django_db


def start(user, *, model="iris", source="1", target="2") -> Swap:
    return swapping.start_swap(
        model=model, from_version=source, to_version=target, user=user, via="test"
    )


def test_start_swap_records_a_pending_swap(alice, candidate_version):
    swap = start(alice)

    swap.refresh_from_db()
    assert (swap.state, swap.kind, swap.to_version) == ("pending", "swap", candidate_version)
    assert swap.requested_by == alice


def test_start_swap_names_the_job_on_the_record(alice, candidate_version, control_plane):
    swap = start(alice)

    swap.refresh_from_db()
    assert swap.rq_job_id == f"{control_plane}-swap-{swap.pk}"


def test_start_swap_leaves_the_route_alone_until_the_job_runs(alice, candidate_version, engine):
    start(alice)

    assert engine.route("iris") == "1"


def test_start_swap_is_audited_as_accepted(alice, candidate_version):
    swap = start(alice)

    entry = AuditEntry.objects.get(action=audit.START_SWAP)
    assert (entry.actor, entry.outcome, entry.details["swap"]) == ("alice", "accepted", swap.pk)


def test_on_an_approval_gated_model_a_swap_back_to_a_served_version_is_refused(
    alice, served_before
):
    ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)

    with pytest.raises(Invalid) as refused:
        start(alice, source="2", target="1")

    assert "going back to it is a rollback, so request one" in refused.value.fields["to_version"]
    assert Swap.objects.filter(to_version__version="1").count() == 0


def test_on_an_approval_gated_model_a_swap_to_a_new_version_needs_no_approval(alice, served_before):
    ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)

    assert start(alice, source="2", target="3").state == "pending"


def test_a_swap_no_worker_would_run_says_so_on_its_record(alice, candidate_version, control_plane):
    swap = start(alice)

    swap.refresh_from_db()
    queue = f"{control_plane}-swaps"
    assert swap.state == "pending"
    assert swap.message == (
        f"queued, but no worker listens on queue {queue!r}: the swap starts when one does "
        f"(manage.py rqworker {queue})"
    )
    assert [t.message for t in swap.transitions.all()][-1] == swap.message


def test_the_swap_job_completes_the_swap(alice, candidate_version):
    swap = start(alice)

    jobs.run_swap(swap.pk)

    swap.refresh_from_db()
    assert swap.state == "completed"


def test_the_swap_job_routes_the_model_to_the_target(alice, candidate_version, engine):
    jobs.run_swap(start(alice).pk)

    assert engine.route("iris") == "2"


def test_the_database_records_the_new_active_version(alice, iris, candidate_version):
    jobs.run_swap(start(alice).pk)

    iris.refresh_from_db()
    assert iris.active_version == candidate_version


def test_every_state_the_swap_passed_through_is_a_row(alice, candidate_version):
    swap = start(alice)

    jobs.run_swap(swap.pk)

    states = list(SwapTransition.objects.filter(swap=swap).values_list("state", flat=True))
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == [
        "pending",
        "swapping",
        "draining",
        "completed",
    ]


def test_a_finished_swap_is_audited_with_its_outcome(alice, candidate_version):
    swap = start(alice)

    jobs.run_swap(swap.pk)

    entry = AuditEntry.objects.get(action=audit.FINISH)
    assert (entry.outcome, entry.details["swap"], entry.to_version) == ("completed", swap.pk, "2")


def test_a_swap_records_the_requests_it_drained(alice, candidate_version):
    swap = start(alice)

    jobs.run_swap(swap.pk)

    swap.refresh_from_db()
    assert (swap.requests_drained, swap.requests_remaining) == (0, 0)


def test_a_swap_to_an_unhealthy_version_fails_with_the_reason(alice, broken_version):
    swap = start(alice, target="3")

    jobs.run_swap(swap.pk)

    swap.refresh_from_db()
    assert swap.state == "failed"
    assert "failed its health check" in swap.message


def test_a_failed_swap_leaves_routing_and_the_record_of_it_untouched(
    alice, iris, serving_version, broken_version, engine
):
    jobs.run_swap(start(alice, target="3").pk)

    iris.refresh_from_db()
    assert (engine.route("iris"), iris.active_version) == ("1", serving_version)


def test_running_the_swap_job_again_changes_nothing(alice, candidate_version):
    swap = start(alice)
    jobs.run_swap(swap.pk)
    rows = SwapTransition.objects.count()

    jobs.run_swap(swap.pk)

    assert SwapTransition.objects.count() == rows


def test_a_second_swap_of_the_model_is_refused_while_one_runs(alice, candidate_version):
    start(alice)

    with pytest.raises(Conflict, match="already running"):
        start(alice)


def test_a_refused_swap_writes_only_its_audit_entry(alice, candidate_version):
    start(alice)
    swaps, transitions = Swap.objects.count(), SwapTransition.objects.count()

    with pytest.raises(Conflict):
        start(alice)

    assert (Swap.objects.count(), SwapTransition.objects.count()) == (swaps, transitions)
    assert AuditEntry.objects.filter(action=audit.START_SWAP, outcome="refused").count() == 1


def test_a_swap_from_a_version_that_is_not_active_is_refused(alice, candidate_version):
    with pytest.raises(Invalid) as refusal:
        start(alice, source="2", target="1")

    assert refusal.value.fields == {"from_version": "model 'iris' serves version '1', not '2'"}


def test_a_swap_to_the_same_version_is_refused(alice, serving_version):
    with pytest.raises(Invalid) as refusal:
        start(alice, source="1", target="1")

    assert refusal.value.fields == {"to_version": swapping.SAME_VERSION}


def test_a_swap_to_an_unknown_version_is_refused(alice, iris):
    with pytest.raises(Invalid) as refusal:
        start(alice, target="9")

    assert refusal.value.fields == {"to_version": "model 'iris' has no version '9'"}


def test_a_swap_of_an_unknown_model_is_refused(alice, iris):
    with pytest.raises(NotFound, match="model 'nope' does not exist"):
        start(alice, model="nope")


def test_a_swap_needs_the_start_swap_permission(mallory, candidate_version):
    with pytest.raises(Forbidden, match=r"swaps\.start_swap"):
        start(mallory)


def test_a_swap_needs_a_user(candidate_version):
    with pytest.raises(NotAuthenticated):
        start(None)


def test_a_model_that_serves_nothing_is_deployed_without_a_source(alice, engine, iris_specs):
    served = ServedModel.objects.create(name="fresh")
    add_version(served, replace(iris_specs["1"], model_id="fresh"))

    swap = swapping.start_swap(
        model="fresh", from_version=None, to_version="1", user=alice, via="test"
    )
    jobs.run_swap(swap.pk)

    swap.refresh_from_db()
    served.refresh_from_db()
    assert (swap.kind, swap.state, served.active_version.version) == ("deploy", "completed", "1")
    assert engine.route("fresh") == "1"


def test_live_status_reports_the_engine_view_of_the_model(alice, serving_version):
    status = swapping.live_status(model="iris")

    assert (status.model_id, status.current_version, status.state.value) == ("iris", "1", "idle")


@pytest.fixture
def renamed_output(iris, iris_specs):
    """Iris 4: iris 1 answering under another output name, which breaks its clients."""
    spec = iris_specs["1"]
    renamed = (replace(spec.outputs[0], name="predict"),)
    return add_version(iris, replace(spec, version="4", outputs=renamed))


def test_a_swap_to_a_target_that_breaks_clients_fails_naming_why(alice, renamed_output, engine):
    swap = start(alice, target="4")

    assert jobs.run_swap(swap.pk) == Swap.State.FAILED
    swap.refresh_from_db()
    assert "would break the clients of version '1'" in swap.message
    assert "output 'label', which clients read, is not one it gives" in swap.message
    assert ServedModel.objects.get(name="iris").active_version.version == "1"


def test_a_forced_swap_completes_and_its_reason_is_recorded(alice, renamed_output):
    swap = swapping.start_swap(
        model="iris",
        from_version="1",
        to_version="4",
        user=alice,
        via="test",
        force="clients were moved to 'predict' last week",
    )

    assert jobs.run_swap(swap.pk) == Swap.State.COMPLETED
    swap.refresh_from_db()
    assert swap.forced_reason == "clients were moved to 'predict' last week"
    entry = AuditEntry.objects.get(action=audit.START_SWAP, outcome="accepted")
    assert entry.details["forced"] == "clients were moved to 'predict' last week"
    flip = swap.transitions.get(state=Swap.State.DRAINING)
    assert "forced: it breaks clients" in flip.message


@pytest.mark.parametrize("force", ["", "   ", "x" * 501, 7])
def test_forcing_without_a_reason_is_refused(alice, renamed_output, force):
    with pytest.raises(Invalid) as refused:
        swapping.start_swap(
            model="iris", from_version="1", to_version="4", user=alice, via="test", force=force
        )

    assert "force" in refused.value.fields
    assert not Swap.objects.exists()
