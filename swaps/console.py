"""What the console shows: the read-side queries its pages, htmx answers and pushes share.

Every live fragment in templates/swaps/live.html is rendered from one of these
contexts, whether it is part of a full page (views.py), the answer to an htmx request
(views.py) or a websocket push (broadcast.py), so the three can never disagree.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from swaps import fleet_reports
from swaps.models import AuditEntry, RollbackRequest, ServedModel, Swap, SwapTransition
from swaps.registry import get_model

IDLE = "Idle"
HISTORY_LENGTH = 20
LATEST_SWAPS = 10
AUDIT_LENGTH = 30


def swaps_of(queryset: QuerySet[Swap]) -> QuerySet[Swap]:
    return queryset.select_related("served_model", "from_version", "to_version", "requested_by")


def requests_of(queryset: QuerySet[RollbackRequest]) -> QuerySet[RollbackRequest]:
    return queryset.select_related(
        "served_model", "from_version", "target_version", "requested_by", "decided_by", "swap"
    )


def state_context(served: ServedModel, latest: Swap | None = None) -> dict[str, Any]:
    """`swap-state`: the version served, and the latest operation's state and result
    (`latest` as the caller read it, else read here)."""
    if latest is None:
        latest = swaps_of(served.swaps.all()).first()
    return {
        "model": served,
        "swap": latest,
        "state": latest.get_state_display() if latest else IDLE,
        "duration": duration(latest) if latest else "",
    }


def duration(swap: Swap) -> str:
    """How long a finished operation took, from acceptance to its final state."""
    if swap.finished_at is None:
        return ""
    return f"{(swap.finished_at - swap.created_at).total_seconds():.1f} s"


def history_context(served: ServedModel) -> dict[str, Any]:
    """`history`: the model's latest operations, each with its transitions (a timeline)."""
    transitions = Prefetch("transitions", queryset=SwapTransition.objects.order_by("at", "id"))
    swaps = swaps_of(served.swaps.all()).prefetch_related(transitions)[:HISTORY_LENGTH]
    return {"model": served, "history": list(swaps)}


def audit_context(served: ServedModel) -> dict[str, Any]:
    entries = AuditEntry.objects.filter(model=served.name)[:AUDIT_LENGTH]
    return {"model": served, "entries": list(entries)}


def swap_form_context(served: ServedModel) -> dict[str, Any]:
    """`swap-form`: from the active version to any other registered one."""
    targets = served.versions.exclude(pk=served.active_version_id)
    return {"model": served, "swap_targets": list(targets)}


def rollback_context(served: ServedModel) -> dict[str, Any]:
    """`rollback`: a button per version this model served before, and its requests."""
    targets = served.versions.filter(first_served_at__isnull=False).exclude(
        pk=served.active_version_id
    )
    waiting = requests_of(served.rollback_requests.filter(state=RollbackRequest.State.PENDING))
    return {"model": served, "rollback_targets": list(targets), "model_waiting": list(waiting)}


def versions_context(served: ServedModel) -> dict[str, Any]:
    """`versions`: each registered version, which one serves, and its last health check
    on each live replica (read from the replicas' reports in Redis)."""
    health = fleet_reports.health_by_version(served.name)
    rows = [(version, (health or {}).get(version.version, [])) for version in served.versions.all()]
    return {"model": served, "version_rows": rows, "fleet_unreachable": health is None}


def approvals_context() -> dict[str, Any]:
    """`approvals`: every rollback request waiting for a decision, oldest first."""
    waiting = requests_of(RollbackRequest.objects.filter(state=RollbackRequest.State.PENDING))
    return {"waiting": list(waiting.order_by("created_at", "id"))}


def latest_swaps_context() -> dict[str, Any]:
    return {"latest_swaps": list(swaps_of(Swap.objects.all())[:LATEST_SWAPS])}


def model_context(name: str) -> dict[str, Any]:
    """Every fragment of the model page (raises NotFound for an unknown model)."""
    served = get_model(name)
    return {
        **state_context(served),
        **history_context(served),
        **audit_context(served),
        **rollback_context(served),
        **swap_form_context(served),
    }


def dashboard_context() -> dict[str, Any]:
    models = list(ServedModel.objects.select_related("active_version"))
    return {
        "cards": [state_context(served) for served in models],
        **latest_swaps_context(),
        **approvals_context(),
    }
