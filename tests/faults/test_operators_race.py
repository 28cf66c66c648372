"""Two operators at once: alice swaps held to 3 while bob rolls it back to 1.

Version 2 serves with a request in flight, so whichever operation wins is still
running when the other arrives: exactly one is accepted, the other is refused with a
conflict that says what is running, and both attempts are in the audit log.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from swaps.models import AuditEntry, ServedModel, Swap
from tests.control_plane import add_version, client_for, post_json
from tests.fleet_models import gated_spec
from tests.live import Held, Traffic, api_swap, finished, pending, settled
from tests.processes import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def swapped_held(alice, held_model, worker) -> ServedModel:
    """held 2 serving (1 served before, a rollback target); 3 registered."""
    assert finished(api_swap(alice, "held", "1", "2"), worker).state == "completed"
    add_version(held_model, gated_spec(version="3"))
    return held_model


def at_once(*clicks) -> list[int]:
    """Send each (user, path, body) from its own thread, released together."""
    start = threading.Barrier(len(clicks))
    statuses: dict[int, int] = {}

    def click(index: int, user, path: str, body: dict) -> None:
        try:
            start.wait(timeout=10)
            statuses[index] = post_json(client_for(user), path, body).status_code
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(i, *c)) for i, c in enumerate(clicks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return [statuses.get(i, 0) for i in range(len(clicks))]


def test_a_swap_and_a_rollback_clicked_at_once_run_one_and_refuse_the_other(
    alice, bob, swapped_held, replicas, worker
):
    assert settled("held", replicas, worker) == "2"
    held = Held(replicas[0])
    wait_until(lambda: pending("held", "2") == 1, timeout=30, what="a request in flight")

    with Traffic(replicas, model="held") as traffic:
        statuses = at_once(
            (alice, "/api/models/held/swaps", {"from_version": "2", "to_version": "3"}),
            (bob, "/api/models/held/rollbacks", {"target_version": "1", "reason": "wrong"}),
        )
        held.release()
        version = settled("held", replicas, worker)

    winner = Swap.objects.exclude(pk__in=Swap.objects.order_by("id")[:1]).get()
    refused = AuditEntry.objects.get(model="held", outcome="refused")
    assert Counter(statuses) == {202: 1, 409: 1}
    assert traffic.failures() == {}
    assert held.outcome()["model_version"] == "2"
    assert winner.state == "completed"
    assert version == winner.to_version.version
    assert refused.details["error"].startswith(f"a {winner.kind} of model 'held'")
    assert AuditEntry.objects.filter(model="held", outcome="accepted").count() == 2
