"""The management commands: the domain from a shell, with --json and one-line errors."""

from __future__ import annotations

import json
import os
import pwd
from dataclasses import replace
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from swaps import job_queue, registry, tokens
from swaps.models import AuditEntry, ModelVersion, RollbackRequest, ServedModel, Swap

from .control_plane import add_version, make_user
from .workers import manage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def not_under_sudo(monkeypatch):
    # Run through sudo, the suite would see its caller named in every command's entries.
    monkeypatch.delenv("SUDO_USER", raising=False)


def os_account() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def run_json(*args: str):
    return json.loads(run(*args, "--json"))


def test_swap_starts_a_swap_and_says_so(alice, candidate_version):
    assert run("swap", "iris", "1", "2", "--user", "alice").startswith("swap ")
    assert Swap.objects.get().state == "pending"


def test_swap_json_is_the_swap_record(alice, candidate_version):
    document = run_json("swap", "iris", "1", "2", "--user", "alice")

    assert (document["id"], document["state"]) == (Swap.objects.get().pk, "pending")


def test_swap_refusals_are_one_line_errors(alice, iris):
    with pytest.raises(CommandError, match=r"^model 'nope' does not exist$"):
        run("swap", "nope", "1", "2", "--user", "alice")


def test_a_command_that_changes_state_needs_a_user(candidate_version, monkeypatch):
    monkeypatch.delenv("HOTSWAP_USER", raising=False)

    with pytest.raises(CommandError, match="pass --user"):
        run("swap", "iris", "1", "2", "--user", "")


def test_a_command_checks_the_user_permissions(mallory, candidate_version):
    with pytest.raises(CommandError, match="mallory may not start a swap"):
        run("swap", "iris", "1", "2", "--user", "mallory")


def test_an_unknown_user_is_a_one_line_error(candidate_version):
    with pytest.raises(CommandError, match=r"^no user named 'eve'$"):
        run("swap", "iris", "1", "2", "--user", "eve")


def test_swap_with_a_dash_deploys_a_model_that_serves_nothing(alice, engine, iris_specs):
    add_version(
        ServedModel.objects.create(name="fresh"), replace(iris_specs["1"], model_id="fresh")
    )

    document = run_json("swap", "fresh", "-", "1", "--user", "alice")

    assert (document["kind"], document["from_version"]) == ("deploy", None)


def test_rollback_flips_at_once(alice, served_before, engine):
    document = run_json("rollback", "iris", "1", "--reason", "bad answers", "--user", "alice")

    assert (document["state"], document["swap"]["state"]) == ("approved", "draining")
    assert engine.route("iris") == "1"


def test_a_failed_rollback_is_a_one_line_error(alice, served_before, unhealthy_target):
    with pytest.raises(CommandError, match=r"^rollback request \d+ .* failed; .*boom"):
        run("rollback", "iris", "1", "--reason", "bad answers", "--user", "alice")


def test_approve_rollback_approves_another_users_request(alice, bob, iris, served_before):
    ServedModel.objects.filter(pk=iris.pk).update(rollback_requires_approval=True)
    waiting = run_json("rollback", "iris", "1", "--reason", "bad", "--user", "alice")

    document = run_json("approve_rollback", str(waiting["id"]), "--user", "bob")

    assert (document["state"], document["decided_by"]) == ("approved", "bob")


def test_approve_rollback_refuses_your_own_request(bob, iris, served_before):
    ServedModel.objects.filter(pk=iris.pk).update(rollback_requires_approval=True)
    waiting = run_json("rollback", "iris", "1", "--reason", "bad", "--user", "bob")

    with pytest.raises(CommandError, match="their own rollback request"):
        run("approve_rollback", str(waiting["id"]), "--user", "bob")


def test_a_command_records_the_os_account_that_ran_it_beside_the_user_it_names(
    alice, bob, iris, served_before
):
    ServedModel.objects.filter(pk=iris.pk).update(rollback_requires_approval=True)
    waiting = run_json("rollback", "iris", "1", "--reason", "bad", "--user", "alice")

    run("approve_rollback", str(waiting["id"]), "--user", "bob")

    entry = AuditEntry.objects.get(action="approve_rollback")
    assert (entry.actor, entry.via) == ("bob", f"cli (os user {os_account()})")


def test_the_os_account_comes_from_the_process_not_its_environment(
    alice, candidate_version, monkeypatch
):
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):  # what getpass.getuser() reads
        monkeypatch.setenv(name, "bob")

    run("swap", "iris", "1", "2", "--user", "alice")

    assert AuditEntry.objects.get(action="start_swap").via == f"cli (os user {os_account()})"


def test_a_command_run_through_sudo_also_records_who_ran_sudo(
    alice, candidate_version, monkeypatch
):
    monkeypatch.setenv("SUDO_USER", "alice")

    run("swap", "iris", "1", "2", "--user", "alice")

    entry = AuditEntry.objects.get(action="start_swap")
    assert entry.via == f"cli (os user {os_account()}, sudo from alice)"


def test_a_sudo_user_is_recorded_no_longer_than_a_linux_user_name(
    alice, candidate_version, monkeypatch
):
    monkeypatch.setenv("SUDO_USER", "x" * 500)  # the caller's to set

    run("swap", "iris", "1", "2", "--user", "alice")

    entry = AuditEntry.objects.get(action="start_swap")
    assert entry.via.endswith(f", sudo from {'x' * 32})")


def test_a_refused_command_records_the_os_account_too(mallory, candidate_version):
    with pytest.raises(CommandError):
        run("swap", "iris", "1", "2", "--user", "mallory")

    entry = AuditEntry.objects.get(action="start_swap")
    assert (entry.outcome, entry.via) == ("refused", f"cli (os user {os_account()})")


def test_reject_rollback_rejects(alice, bob, iris, served_before):
    ServedModel.objects.filter(pk=iris.pk).update(rollback_requires_approval=True)
    waiting = run_json("rollback", "iris", "1", "--reason", "bad", "--user", "alice")

    run("reject_rollback", str(waiting["id"]), "--user", "bob")

    assert RollbackRequest.objects.get().state == "rejected"


def test_swap_status_prints_the_engine_status(alice, serving_version):
    assert run("swap_status", "iris").startswith("iris: idle, serving 1, 0 requests pending")


def test_swap_status_json_is_the_swap_status(alice, serving_version):
    document = run_json("swap_status", "iris")

    assert (document["model_id"], document["state"]) == ("iris", "idle")


def test_register_version_from_a_spec_file(alice, iris, iris_specs, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(iris_specs["2"].as_dict()))

    document = run_json("register_version", "iris", "7", "--spec", str(spec), "--user", "alice")

    assert (document["version"], document["runtime"]) == ("7", "onnx")


def test_register_version_from_options(alice, iris):
    run(
        "register_version",
        "iris",
        "8",
        "--runtime=python",
        "--artifact=swaps.demo_models:broken_iris",
        "--sample-input=[[5.1, 3.5, 1.4, 0.2]]",
        "--expected-output-shape=[-1, 3]",
        "--expected-output-dtype=FP64",
        "--memory-limit-bytes=100000000",
        "--user=alice",
    )

    assert ModelVersion.objects.get(version="8").expected_output_shape == [-1, 3]


def test_register_version_of_a_file_alone_prints_what_it_took_from_the_model(
    alice, iris, iris_specs
):
    out = run(
        "register_version",
        "iris",
        "8",
        "--runtime=sklearn",
        f"--artifact={iris_specs['1'].artifact}",
        "--user=alice",
    )

    assert "taken from the model: inputs " in out
    assert "sample_input [[0.0, 0.0, 0.0, 0.0]], expected_output_shape [-1], " in out
    assert ModelVersion.objects.get(version="8").expected_output_dtype == "INT64"


def test_register_version_names_the_missing_options(alice, iris):
    with pytest.raises(CommandError, match="missing --runtime, --artifact"):
        run("register_version", "iris", "9", "--user", "alice")


def test_register_version_reports_bad_json_options(alice, iris):
    with pytest.raises(CommandError, match="--sample-input is not valid JSON"):
        run("register_version", "iris", "9", "--sample-input", "[1,", "--user", "alice")


def test_create_api_token_prints_a_token_that_works(alice, iris, client):
    secret = run("create_api_token", "alice").strip()

    response = client.get("/api/models", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200
    assert tokens.user_for_secret(secret) == alice


def test_republish_fleet_republishes_the_routes(serving_version, engine):
    document = run_json("republish_fleet")

    assert document["routes"] == {"iris": "1"}
    assert engine.republished[-1] == {"iris": ("1", ["1"])}


def test_republish_fleet_records_the_os_account_that_ran_it(serving_version, engine):
    run("republish_fleet")

    entry = AuditEntry.objects.get(action="republish_fleet")
    assert (entry.actor, entry.via) == ("cli", f"cli (os user {os_account()})")


def test_republish_fleet_keeps_the_route_of_a_model_mid_swap(alice, candidate_version, engine):
    run("swap", "iris", "1", "2", "--user", "alice")

    document = run_json("republish_fleet")

    assert (document["routes"], document["kept_running"]) == ({}, ["iris"])


def test_sweep_swaps_reports_what_it_did(serving_version):
    assert run_json("sweep_swaps") == {"republished": False, "recovering": [], "fleet_error": ""}


@pytest.fixture
def seeded(engine, settings, tmp_path):
    settings.HOTSWAP_RUN_DIR = tmp_path
    return run_json("seed_demo")


def test_seed_demo_makes_the_three_users(seeded):
    assert sorted(User.objects.values_list("username", flat=True)) == ["alice", "bob", "mallory"]
    assert sorted(seeded["passwords"]) == ["alice", "bob", "mallory"]


def test_seed_demo_gives_each_user_their_rights(seeded):
    alice, bob, mallory = (User.objects.get(username=u) for u in ("alice", "bob", "mallory"))

    assert alice.has_perm("swaps.start_swap") and not alice.has_perm("swaps.approve_rollback")
    assert bob.has_perm("swaps.approve_rollback") and not bob.has_perm("swaps.start_swap")
    assert not mallory.get_all_permissions()


def test_seed_demo_gives_no_demo_user_the_approval_gate(seeded):
    for username in ("alice", "bob", "mallory"):
        assert not User.objects.get(username=username).has_perm("swaps.set_rollback_approval")


def test_seed_demo_lets_alice_read_the_records_in_the_admin(seeded, client):
    client.force_login(User.objects.get(username="alice"))

    assert client.get("/admin/swaps/swap/").status_code == 200
    assert client.get("/admin/swaps/auditentry/").status_code == 200
    client.force_login(User.objects.get(username="mallory"))
    assert client.get("/admin/").status_code == 302  # to the admin's login


def test_seed_demo_serves_iris_1_with_approval_gated_rollbacks(seeded, engine):
    iris = ServedModel.objects.get(name="iris")

    assert (iris.active_version.version, iris.rollback_requires_approval) == ("1", True)
    assert sorted(iris.versions.values_list("version", flat=True)) == ["1", "2", "3"]
    assert engine.route("iris") == "1"


def test_seed_demo_sets_the_approval_gate_as_itself_audited(seeded):
    entry = AuditEntry.objects.get(action="set_rollback_approval")

    assert (entry.actor, entry.outcome, entry.model, entry.details) == (
        "seed_demo",
        "accepted",
        "iris",
        {"required": True},
    )


def test_every_audit_entry_seed_demo_writes_names_the_os_account(seeded):
    entries = AuditEntry.objects.all()

    assert {e.action for e in entries} >= {"register_version", "seed_demo"}
    assert {e.via for e in entries} == {f"cli (os user {os_account()})"}


def test_seed_demo_no_approval_cannot_open_the_gate_of_a_model_it_serves(seeded):
    # An operator with a shell tried this once the gate no longer took register_version.
    document = run_json("seed_demo", "--no-approval")

    iris = ServedModel.objects.get(name="iris")
    assert iris.rollback_requires_approval and document["rollback_requires_approval"]
    assert AuditEntry.objects.filter(action="set_rollback_approval").count() == 1


def test_seed_demo_again_leaves_a_changed_approval_gate_alone(seeded):
    iris = ServedModel.objects.get(name="iris")
    keeper = make_user("carol", ("set_rollback_approval",))
    registry.set_rollback_approval(model=iris, required=False, user=keeper, via="test")

    text = run("seed_demo")

    iris.refresh_from_db()
    assert not iris.rollback_requires_approval
    assert "iris still rolls back without approval: seed_demo sets that only" in text


def test_seed_demo_again_changes_nothing(seeded):
    again = run_json("seed_demo")

    assert (again["passwords"], again["registered"]) == ({}, [])
    assert ModelVersion.objects.count() == 3


def test_the_demo_users_passwords_can_come_from_the_environment(
    engine, settings, tmp_path, monkeypatch
):
    settings.HOTSWAP_RUN_DIR = tmp_path
    monkeypatch.setenv("HOTSWAP_DEMO_PASSWORD", "correct horse battery staple")

    run("seed_demo")

    assert User.objects.get(username="bob").check_password("correct horse battery staple")


@pytest.mark.django_db(transaction=True)
def test_a_refused_command_exits_1_with_one_line_on_stderr(alice, iris):
    result = manage("swap", "nope", "1", "2", "--user", "alice")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["CommandError: model 'nope' does not exist"]


def test_jobs_and_commands_share_the_queue(alice, candidate_version, control_plane):
    document = run_json("swap", "iris", "1", "2", "--user", "alice")

    assert document["rq_job_id"] == job_queue.job_id("swap", document["id"])
