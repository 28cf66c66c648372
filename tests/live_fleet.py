"""Models served by real replica processes, and requests sent to them, for live tests."""

from __future__ import annotations

import httpx
from django.utils import timezone

from swaps import fleet_state
from swaps.models import ServedModel

from .control_plane import add_version
from .processes import ReplicaProcess, wait_until

IRIS_ROW = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}


def serve(name: str, specs, replica: ReplicaProcess) -> ServedModel:
    """Records for `specs` (the first active), published, and served by the replica."""
    served = ServedModel.objects.create(name=name)
    add_version(served, specs[0], first_served_at=timezone.now())
    for spec in specs[1:]:
        add_version(served, spec)
    served.active_version = served.versions.get(version=specs[0].version)
    served.save()
    fleet_state.republish_from_database()
    wait_until(lambda: answer(replica, name).get("model_version"), timeout=60, what="a route")
    return served


def answer(replica: ReplicaProcess, model: str, *, seconds: float = 0.0) -> dict:
    if model == "sleepy":
        row = {"name": "input-0", "shape": [1, 1], "datatype": "FP32", "data": [seconds]}
    else:
        row = IRIS_ROW
    response = httpx.post(
        f"{replica.url}/v2/models/{model}/infer", json={"inputs": [row]}, timeout=60
    )
    return response.json() if response.status_code == 200 else {}
