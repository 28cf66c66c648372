"""The records' own guarantees: one running operation per model, an append-only audit log."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from swaps.audit import audit
from swaps.models import AppendOnly, AuditEntry, ModelVersion, Swap

pytestmark = pytest.mark.django_db


def operation(iris, state: str, target) -> Swap:
    return Swap.objects.create(served_model=iris, to_version=target, state=state)


def test_the_database_refuses_a_second_running_operation_on_a_model(iris, candidate_version):
    operation(iris, "draining", candidate_version)

    with pytest.raises(IntegrityError), transaction.atomic():
        operation(iris, "pending", candidate_version)


def test_finished_operations_do_not_block_a_new_one(iris, candidate_version):
    operation(iris, "completed", candidate_version)
    operation(iris, "failed", candidate_version)

    operation(iris, "pending", candidate_version)

    assert Swap.objects.count() == 3


def test_a_version_is_registered_once_per_model(iris, serving_version):
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(
            served_model=iris,
            version="1",
            runtime="sklearn",
            artifact="x.joblib",
            sample_input=[[1.0]],
            expected_output_shape=[-1],
            expected_output_dtype="INT64",
            memory_limit_bytes=1,
        )


def test_a_version_record_gives_back_its_engine_spec(serving_version, iris_specs):
    assert serving_version.as_spec() == iris_specs["1"]


def test_an_audit_entry_cannot_be_changed(db):
    entry = audit(actor="alice", via="test", action="start_swap", outcome="accepted")
    entry.outcome = "refused"

    with pytest.raises(AppendOnly):
        entry.save()


def test_an_audit_entry_cannot_be_deleted(db):
    entry = audit(actor="alice", via="test", action="start_swap", outcome="accepted")

    with pytest.raises(AppendOnly):
        entry.delete()


def test_audit_entries_cannot_be_updated_in_bulk(db):
    audit(actor="alice", via="test", action="start_swap", outcome="accepted")

    with pytest.raises(AppendOnly):
        AuditEntry.objects.all().update(outcome="refused")


def test_audit_entries_cannot_be_deleted_in_bulk(db):
    audit(actor="alice", via="test", action="start_swap", outcome="accepted")

    with pytest.raises(AppendOnly):
        AuditEntry.objects.filter(actor="alice").delete()

    assert AuditEntry.objects.count() == 1


def test_an_audit_entry_outlives_its_user(alice):
    audit(actor=alice, via="test", action="start_swap", outcome="accepted")

    alice.delete()

    assert AuditEntry.objects.get().actor == "alice"
