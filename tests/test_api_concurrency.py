"""Two swap requests for one model at the same moment: exactly one is accepted.

Real concurrent transactions (threads with their own database connections), so the
database's conditional unique constraint decides, not the order of the code. Runs on
SQLite and on PostgreSQL (CI sets DATABASE_URL).
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from swaps.models import AuditEntry, Swap

from .control_plane import client_for, post_json

pytestmark = pytest.mark.django_db(transaction=True)

ATTEMPTS = 2


def race(user, bodies: list[dict]) -> list[int]:
    start = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def attempt(body: dict) -> None:
        client = client_for(user)
        try:
            start.wait(timeout=10)
            statuses.append(post_json(client, "/api/models/iris/swaps", body).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def test_two_simultaneous_swaps_of_one_model_one_202_one_409(alice, candidate_version):
    statuses = race(alice, [{"from_version": "1", "to_version": "2"}] * ATTEMPTS)

    assert Counter(statuses) == {202: 1, 409: 1}


def test_two_simultaneous_swaps_leave_exactly_one_record(alice, candidate_version):
    race(
        alice, [{"from_version": "1", "to_version": "2"}, {"from_version": "1", "to_version": "3"}]
    )

    assert Swap.objects.count() == 1


def test_both_simultaneous_attempts_are_audited(alice, candidate_version):
    race(alice, [{"from_version": "1", "to_version": "2"}] * ATTEMPTS)

    outcomes = AuditEntry.objects.filter(action="start_swap").values_list("outcome", flat=True)
    assert Counter(outcomes) == {"accepted": 1, "refused": 1}
