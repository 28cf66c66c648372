"""The database follows the fleet's quarantines, and never undoes an operator's clear."""

from __future__ import annotations

import time

from swaps import quarantine
from swaps.engine.fleet_versions import Quarantine
from swaps.models import AuditEntry, ModelVersion

CRASHED = Quarantine(reason="its load crashed the process that tried it", replica="r1", at=0.0)


def fleet_reads(monkeypatch, *answers: dict) -> None:
    """The fleet's quarantines as successive reads find them (then as the last one)."""
    reads = list(answers)
    monkeypatch.setattr(
        quarantine.fleet_state, "run", lambda step: reads.pop(0) if len(reads) > 1 else reads[0]
    )


def test_a_quarantine_the_fleet_holds_is_recorded_with_its_reason(iris, monkeypatch):
    entry = Quarantine(reason=CRASHED.reason, replica="r1", at=time.time())
    fleet_reads(monkeypatch, {("iris", "2"): entry})

    (recorded,) = quarantine.record_fleet_quarantines()

    assert recorded.version == "2" and recorded.quarantine_reason == CRASHED.reason
    assert AuditEntry.objects.filter(action="quarantine_version", to_version="2").exists()


def test_a_quarantine_cleared_while_it_was_being_recorded_is_not_recorded_again(iris, monkeypatch):
    # The first read found it; by the time the record was locked, an operator's clear
    # had committed and cleared the fleet's entry too (what a second read finds).
    fleet_reads(monkeypatch, {("iris", "2"): CRASHED}, {})

    assert quarantine.record_fleet_quarantines() == []

    assert ModelVersion.objects.get(served_model=iris, version="2").quarantined_at is None
    assert not AuditEntry.objects.filter(action="quarantine_version").exists()
