"""The audit log is tamper-evident: a hash chain `verify_audit` recomputes, a trigger that
refuses rewrites, and entries for what the admin changes and who signs in.

Runs on SQLite and on PostgreSQL (CI sets DATABASE_URL). Both refuse UPDATE of an
entry; PostgreSQL refuses DELETE too, SQLite leaves it to the chain (migration 0006
says why). To tamper, a test lifts the trigger the way someone who may alter the table
could, and puts it back.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from swaps import audit, audit_chain
from swaps.models import AuditEntry

from .workers import manage

pytestmark = pytest.mark.django_db

MIGRATION = importlib.import_module("swaps.migrations.0006_audit_chain")
BEFORE_THE_CHAIN = ("swaps", "0005_code_and_approval_permissions")
on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's trigger refuses DELETE"
)


@pytest.fixture
def trail(db) -> list[AuditEntry]:
    """Three entries, the first the one rewritten in the incident: alice, accepted."""
    return [
        audit.audit(
            actor="alice",
            via="api",
            action=audit.START_SWAP,
            outcome="accepted",
            model="iris",
            from_version="1",
            to_version="2",
            details={"swap": 7},
        ),
        audit.audit(
            actor="bob",
            via="session",
            action=audit.APPROVE_ROLLBACK,
            outcome="refused",
            model="iris",
            details={"error": "bob may not approve his own rollback"},
        ),
        audit.audit(
            actor="alice",
            via="engine",
            action=audit.FINISH,
            outcome="completed",
            model="iris",
            details={"drained": 3, "ratio": 0.1, "notes": ["ok", "grün", None], "t": True},
        ),
    ]


def verify(*args: str) -> str:
    out = StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


@contextmanager
def trigger_lifted() -> Iterator:
    """A cursor that may rewrite the table, in a transaction that puts the trigger back."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {MIGRATION.TABLE} DISABLE TRIGGER {MIGRATION.TRIGGER}")
            yield cursor
            cursor.execute(f"ALTER TABLE {MIGRATION.TABLE} ENABLE TRIGGER {MIGRATION.TRIGGER}")
        else:
            cursor.execute(f"DROP TRIGGER {MIGRATION.TRIGGER}")
            yield cursor
            cursor.execute(MIGRATION.SQLITE_TRIGGER)


def rewrite(cursor, entry: AuditEntry, *, rehash: bool = False, **fields: str) -> None:
    """Raw SQL, as in the incident; `rehash` also stores the rewritten entry's own hash."""
    for name, value in fields.items():
        setattr(entry, name, value)
    if rehash:
        entry.entry_hash = audit_chain.digest(entry)
        fields = {**fields, "entry_hash": entry.entry_hash}
    assignments = ", ".join(f"{name} = %s" for name in fields)
    cursor.execute(
        f"UPDATE {MIGRATION.TABLE} SET {assignments} WHERE id = %s", [*fields.values(), entry.pk]
    )


# --- the chain ---------------------------------------------------------------------------


def test_each_entry_links_to_the_one_before(trail):
    links = [(e.sequence, e.previous_hash) for e in AuditEntry.objects.order_by("sequence")]

    assert links == [
        (1, audit_chain.GENESIS),
        (2, trail[0].entry_hash),
        (3, trail[1].entry_hash),
    ]


def test_an_entry_read_back_from_the_database_still_matches_its_hash(trail):
    stored = AuditEntry.objects.get(pk=trail[2].pk)  # floats, unicode, null in its details

    assert audit_chain.digest(stored) == stored.entry_hash == trail[2].entry_hash


def test_numbers_postgresql_writes_differently_still_match_their_hash(db):
    # jsonb keeps no exponent: 1e16 comes back as the integer 10000000000000000.
    written = audit.audit(
        actor="alice",
        via="api",
        action=audit.START_SWAP,
        outcome="refused",
        details={"big": 1e16, "huge": -1.5e300, "small": 1e-7, "one": 1.0, "inf": float("inf")},
    )

    stored = AuditEntry.objects.get()
    assert audit_chain.digest(stored) == written.entry_hash


def test_verify_audit_says_the_chain_is_intact_and_names_its_head(trail):
    assert verify() == f"3 entries, chain intact (head {trail[2].entry_hash})\n"


def test_verify_audit_on_an_empty_log_is_intact(db):
    assert verify() == "0 entries, chain intact\n"


def test_verify_audit_json_reports_the_count_and_head(trail):
    assert json.loads(verify("--json")) == {
        "entries": 3,
        "intact": True,
        "head": trail[2].entry_hash,
        "problem": "",
        "broken_entry": None,
    }


# --- what the database refuses ---------------------------------------------------------------


def test_a_raw_sql_update_is_refused_by_the_database(trail):
    alice = trail[0]

    with pytest.raises(IntegrityError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            rewrite(cursor, alice, actor="bob", outcome="refused")

    assert AuditEntry.objects.values_list("actor", "outcome").get(pk=alice.pk) == (
        "alice",
        "accepted",
    )


@on_postgresql
def test_a_raw_sql_delete_is_refused_on_postgresql(trail):
    with pytest.raises(IntegrityError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {MIGRATION.TABLE} WHERE id = %s", [trail[1].pk])

    assert AuditEntry.objects.count() == 3


# --- what verify_audit finds ---------------------------------------------------------------


def test_a_rewritten_entry_is_named_by_verify_audit(trail):
    alice = trail[0]
    with trigger_lifted() as cursor:
        rewrite(cursor, alice, actor="bob", outcome="refused")

    with pytest.raises(CommandError) as broken:
        verify()

    assert str(broken.value) == (
        f"3 entries, chain broken at entry {alice.pk} (sequence 1): {audit.OWN_HASH}"
    )


def test_a_rewrite_with_a_fresh_hash_breaks_the_next_entrys_link(trail):
    with trigger_lifted() as cursor:
        rewrite(cursor, trail[0], actor="bob", outcome="refused", rehash=True)

    with pytest.raises(CommandError) as broken:
        verify()

    assert str(broken.value) == (
        f"3 entries, chain broken at entry {trail[1].pk} (sequence 2): {audit.LINK}"
    )


def test_a_deleted_entry_is_named_by_the_entry_after_it(trail):
    with trigger_lifted() as cursor:
        cursor.execute(f"DELETE FROM {MIGRATION.TABLE} WHERE id = %s", [trail[1].pk])

    with pytest.raises(CommandError) as broken:
        verify()

    assert str(broken.value) == (
        f"2 entries, chain broken at entry {trail[2].pk} (sequence 3): the 1 entry before "
        "it, from sequence 2 on, deleted"
    )


def test_verify_audit_json_names_the_broken_entry_and_still_fails(trail):
    with trigger_lifted() as cursor:
        rewrite(cursor, trail[1], details='{"error": "none"}')
    out = StringIO()

    with pytest.raises(CommandError):
        call_command("verify_audit", "--json", stdout=out)

    document = json.loads(out.getvalue())
    assert (document["intact"], document["broken_entry"]) == (
        False,
        {"id": trail[1].pk, "sequence": 2},
    )
    assert document["head"] == trail[0].entry_hash  # the last entry that verified


def test_a_chain_hashed_afresh_is_caught_by_the_head_recorded_before(trail):
    recorded = trail[2].entry_hash
    with trigger_lifted() as cursor:
        rewrite(cursor, trail[0], actor="bob", outcome="refused", rehash=True)
        for entry, before in zip(trail[1:], trail, strict=False):
            rewrite(cursor, entry, previous_hash=before.entry_hash, rehash=True)
    assert verify().startswith("3 entries, chain intact")  # the chain alone cannot tell

    with pytest.raises(CommandError, match=f"no entry has the head hash {recorded}"):
        verify("--head", recorded)


def test_verify_audit_passes_through_a_head_recorded_before(trail):
    audit.audit(actor="alice", via="api", action=audit.START_SWAP, outcome="refused")

    assert verify("--head", trail[2].entry_hash).startswith("4 entries, chain intact")


def test_a_head_that_is_not_a_hash_is_refused(trail):
    with pytest.raises(CommandError, match="--head must be the 64 hex digits"):
        verify("--head", "yesterday's")


@pytest.mark.django_db(transaction=True)
def test_verify_audit_exits_1_with_the_broken_entry_on_stderr(trail):
    with trigger_lifted() as cursor:
        rewrite(cursor, trail[0], actor="bob", outcome="refused")

    result = manage("verify_audit")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip().splitlines() == [
        f"CommandError: 3 entries, chain broken at entry {trail[0].pk} (sequence 1): "
        f"{audit.OWN_HASH}"
    ]


# --- writers at the same moment ------------------------------------------------------------

WRITERS = 4
ENTRIES_EACH = 15


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_chain_one_after_another():
    start = threading.Barrier(WRITERS)
    failures: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            start.wait(timeout=10)
            for n in range(ENTRIES_EACH):
                audit.audit(
                    actor=f"writer-{writer}", via="test", action=audit.START_SWAP, outcome=str(n)
                )
        except BaseException as exc:  # an entry refused for a taken sequence lands here
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    report = audit.verify_chain()
    assert (report.intact, report.entries) == (True, WRITERS * ENTRIES_EACH)


# --- admin changes and sign-ins ----------------------------------------------------------------


def test_an_admin_change_to_a_model_is_audited(admin_client, iris):
    admin_client.post(
        f"/admin/swaps/servedmodel/{iris.pk}/change/",
        {
            "description": "the iris classifier",
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "0",
        },
    )

    entry = AuditEntry.objects.get(action=audit.ADMIN_CHANGE)
    assert (entry.actor, entry.via, entry.model, entry.outcome) == (
        "admin",
        "admin",
        "iris",
        "accepted",
    )
    assert entry.details["object"] == "swaps.servedmodel"
    assert "Description" in entry.details["change"]


def test_adding_a_user_in_the_admin_is_audited(admin_client):
    admin_client.post(
        "/admin/auth/user/add/",
        {
            "username": "carol",
            "usable_password": "true",
            "password1": "a long passphrase 9",
            "password2": "a long passphrase 9",
        },
    )

    entry = AuditEntry.objects.get(action=audit.ADMIN_ADD)
    assert (entry.actor, entry.details["object"], entry.details["object_repr"]) == (
        "admin",
        "auth.user",
        "carol",
    )


def test_deleting_a_group_in_the_admin_is_audited(admin_client):
    operators = Group.objects.create(name="operators")

    admin_client.post(f"/admin/auth/group/{operators.pk}/delete/", {"post": "yes"})

    assert not Group.objects.exists()
    entry = AuditEntry.objects.get(action=audit.ADMIN_DELETE)
    assert (entry.actor, entry.details["object_repr"]) == ("admin", "operators")


def test_a_sign_in_is_audited(client):
    User.objects.create_user("carol", password="a long passphrase 9")

    client.post("/accounts/login/", {"username": "carol", "password": "a long passphrase 9"})

    entry = AuditEntry.objects.get(action=audit.SIGN_IN)
    assert (entry.actor, entry.via, entry.outcome, entry.details["path"]) == (
        "carol",
        "console",
        "accepted",
        "/accounts/login/",
    )


def test_a_failed_sign_in_is_audited_with_the_username_tried(client, alice):
    client.post("/admin/login/", {"username": "alice", "password": "guess"})

    entry = AuditEntry.objects.get(action=audit.SIGN_IN)
    assert (entry.actor, entry.via, entry.outcome) == ("anonymous", "console", "refused")
    assert entry.details == {"username": "alice", "path": "/admin/login/", "address": "127.0.0.1"}


def test_the_username_of_a_failed_sign_in_is_capped(rf):
    authenticate(rf.post("/accounts/login/"), username="m" * 200, password="guess")

    assert AuditEntry.objects.get(action=audit.SIGN_IN).details["username"] == "m" * 150


def test_a_session_made_in_process_is_not_a_sign_in(alice):
    # The test client's force_login: no request arrived, nobody signed in from anywhere.
    Client().force_login(alice)

    assert not AuditEntry.objects.exists()


# --- what an entry keeps ---------------------------------------------------------------------


def test_a_huge_details_value_is_capped_and_says_so(db):
    audit.audit(
        actor="mallory",
        via="api",
        action=audit.START_SWAP,
        outcome="refused",
        details={"body": "x" * 142_000},
    )

    body = AuditEntry.objects.get().details["body"]
    assert body == "x" * audit.MAX_TEXT + "... [cut from 142000 characters]"


def test_details_too_large_as_a_whole_keep_what_fits_and_name_the_rest(db):
    fields = {f"field_{n}": "x" * 100 for n in range(900)}
    audit.audit(
        actor="mallory",
        via="api",
        action=audit.START_SWAP,
        outcome="refused",
        details={"error": "mallory may not start a swap", **fields},
    )

    details = AuditEntry.objects.get().details
    assert len(json.dumps(details, ensure_ascii=False)) <= audit.MAX_DETAILS
    assert details["error"] == "mallory may not start a swap"
    cut = details[audit.DETAILS_CUT]
    assert cut["keys_left_out"] + len(details) - 2 == 900
    assert cut["keys"][0] == f"field_{len(details) - 2}"


def test_a_lone_surrogate_a_client_sent_is_stored_escaped(db):
    audit.audit(
        actor="mallory",
        via="api",
        action=audit.START_SWAP,
        outcome="refused",
        to_version="\ud800",
        details={"to_version": "\ud800"},
    )

    stored = AuditEntry.objects.get()
    assert (stored.to_version, stored.details["to_version"]) == ("\\ud800", "\\ud800")


def test_a_capped_entry_verifies(db):
    audit.audit(
        actor="mallory",
        via="api",
        action=audit.START_SWAP,
        outcome="refused",
        details={"body": "x" * 142_000, "ratio": float("nan")},
    )

    assert audit.verify_chain().intact


# --- the migration -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_chains_existing_entries_in_the_order_they_were_written():
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE_THE_CHAIN])
    Unchained = executor.loader.project_state([BEFORE_THE_CHAIN]).apps.get_model(
        "swaps", "AuditEntry"
    )
    written = timezone.now()
    for n, actor in enumerate(["alice", "bob", "carol"]):
        entry = Unchained.objects.create(
            actor=actor, via="api", action="start_swap", outcome="accepted", details={"n": n}
        )
        # Clocks step back: the id, not the time, is the order of writing.
        Unchained.objects.filter(pk=entry.pk).update(at=written - timedelta(minutes=n))

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert list(AuditEntry.objects.order_by("sequence").values_list("actor", flat=True)) == [
        "alice",
        "bob",
        "carol",
    ]
    assert audit.verify_chain().intact
