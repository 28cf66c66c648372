"""A version whose load kills its process: the fleet serves on and quarantines it.

Before replicas tried loads in a child process, a factory calling `os.abort` killed
every replica that loaded it, and its desired entry killed each new one at start.
"""

from __future__ import annotations

import httpx
import pytest

from swaps import fleet_state
from swaps.models import AuditEntry, ModelVersion
from tests.control_plane import client_for, post_json
from tests.hostile_models import hostile_spec
from tests.live import Traffic, api_swap, finished, serve, wait_agreed
from tests.processes import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


# "held-": the test traffic sends these one-column rows.
VERSIONS = [
    hostile_spec("harmless", model_id="held-hostile"),
    hostile_spec("abort", model_id="held-hostile", version="2"),
]


def quarantined() -> ModelVersion | None:
    version = ModelVersion.objects.get(served_model__name="held-hostile", version="2")
    return version if version.quarantined_at is not None else None


def fleet_quarantine() -> dict:
    return fleet_state.run(lambda engine: engine.quarantined())


def test_a_version_that_aborts_its_load_fails_the_swap_is_quarantined_and_kills_no_replica(
    alice, start_fleet, worker
):
    replicas = start_fleet(2)
    serve("held-hostile", VERSIONS, replicas)

    with Traffic(replicas, model="held-hostile") as traffic:
        swap = finished(api_swap(alice, "held-hostile", "1", "2"), worker)

    assert swap.state == "failed"
    assert "its load crashed the process that tried it (SIGABRT)" in swap.message
    assert traffic.failures() == {}
    assert all(replica.alive() for replica in replicas)
    # Recorded by the swap's job right after it settled the record.
    version = wait_until(quarantined, timeout=30, what="version 2 recorded as quarantined")
    assert version.quarantine_reason == "its load crashed the process that tried it (SIGABRT)"
    (entry,) = AuditEntry.objects.filter(action="quarantine_version")
    assert entry.actor.startswith("replica ") and entry.to_version == "2"
    assert set(fleet_quarantine()) == {("held-hostile", "2")}

    # Refused up front from now on, naming why.
    refused = post_json(
        client_for(alice),
        "/api/models/held-hostile/swaps",
        {"from_version": "1", "to_version": "2"},
    )
    assert refused.status_code == 400
    assert "is quarantined (its load crashed" in refused.json()["fields"]["to_version"]

    # A replica that joins later serves the active version and never tries version 2.
    (late,) = start_fleet(1)
    assert wait_agreed("held-hostile", [*replicas, late]) == "1"
    answered = httpx.get(f"{late.url}/v2/health/ready", timeout=5)
    assert answered.status_code == 200 and late.alive()


def test_clearing_a_quarantine_lets_the_next_swap_try_the_version_again(alice, start_fleet, worker):
    replicas = start_fleet(1)
    serve("held-hostile", VERSIONS, replicas)
    finished(api_swap(alice, "held-hostile", "1", "2"), worker)

    cleared = post_json(client_for(alice), "/api/models/held-hostile/versions/2/clear-quarantine")

    assert cleared.status_code == 200, cleared.json()
    assert cleared.json()["quarantined_at"] is None
    assert fleet_quarantine() == {}
    again = post_json(client_for(alice), "/api/models/held-hostile/versions/2/clear-quarantine")
    assert again.status_code == 409
    assert again.json()["error"] == "version '2' of model 'held-hostile' is not quarantined"
    # Tried again (in a trial, as always): it crashes again, and is quarantined again.
    swap = finished(api_swap(alice, "held-hostile", "1", "2"), worker)
    assert swap.state == "failed"
    wait_until(quarantined, timeout=30, what="version 2 quarantined again")
    actions = list(
        AuditEntry.objects.filter(model="held-hostile")
        .exclude(action__in=["start_swap", "finish"])
        .order_by("id")
        .values_list("action", "outcome")
    )
    assert actions == [
        ("quarantine_version", "accepted"),
        ("clear_quarantine", "accepted"),
        ("clear_quarantine", "refused"),
        ("quarantine_version", "accepted"),
    ]
