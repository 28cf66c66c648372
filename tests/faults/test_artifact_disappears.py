"""A version registered with an artifact that is gone when a replica loads it.

The swap fails naming the missing file, routing stays on the serving version, and no
request fails meanwhile.
"""

from __future__ import annotations

import shutil

import pytest

from swaps.models import Swap
from tests.control_plane import client_for, post_json
from tests.live import Traffic, api_swap, audit_trail, finished, settled

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def test_a_swap_to_a_version_whose_artifact_vanished_fails_and_leaves_routing(
    alice, iris_served, iris_specs, replicas, worker, tmp_path
):
    artifact = tmp_path / "iris-4.joblib"
    shutil.copy(iris_specs["1"].artifact, artifact)
    version = {**iris_specs["1"].as_dict(), "version": "4", "artifact": str(artifact)}
    del version["model_id"], version["artifact_digest"]  # fields the API does not take
    registered = post_json(client_for(alice), "/api/models/iris/versions", version)
    assert registered.status_code == 201, registered.json()
    artifact.unlink()

    with Traffic(replicas) as traffic:
        swap_id = api_swap(alice, "iris", "1", "4")
        swap = finished(swap_id, worker)
        serving = settled("iris", replicas, worker)

    assert traffic.failures() == {}
    assert swap.state == "failed"
    assert str(artifact) in swap.message
    assert serving == "1"
    assert not Swap.objects.filter(state__in=Swap.RUNNING).exists()
    assert audit_trail("iris") == [
        ("alice", "register_version", "accepted"),
        ("alice", "start_swap", "accepted"),
        ("alice", "finish", "failed"),
    ]
