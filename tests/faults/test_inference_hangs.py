"""A request that runs far past the drain timeout: the swap completes without it.

The drain gives up after its timeout and the swap completes, saying one request was
still running; that request is never cut off: it finishes on the version it started on.
"""

from __future__ import annotations

import pytest

from swaps.models import AuditEntry, Swap
from tests.live import Held, Traffic, api_swap, audit_trail, pending, settled
from tests.processes import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

DRAIN_TIMEOUT = 1.0


@pytest.fixture
def worker(start_workers):
    return start_workers(HOTSWAP_DRAIN_TIMEOUT=str(DRAIN_TIMEOUT))


def test_a_request_hanging_past_the_drain_timeout_finishes_after_the_swap_completed(
    alice, held_model, replicas, worker
):
    hung = Held(replicas[0])  # released only once the swap is over
    wait_until(lambda: pending("held", "1") == 1, timeout=30, what="a request in flight")

    with Traffic(replicas, model="held") as traffic:
        swap_id = api_swap(alice, "held", "1", "2")
        version = settled("held", replicas, worker)
        # The swap is over; the hung request is still running on version 1.
        still_running = pending("held", "1")
    hung.release()

    swap = Swap.objects.get(pk=swap_id)
    assert traffic.failures() == {}
    assert (still_running, hung.outcome()["model_version"]) == (1, "1")
    assert (swap.state, swap.requests_remaining) == ("completed", 1)
    assert version == "2"
    assert audit_trail("held") == [
        ("alice", "start_swap", "accepted"),
        ("alice", "finish", "completed"),
    ]
    finish = AuditEntry.objects.get(model="held", action="finish")
    assert finish.details["requests_remaining"] == 1
