"""What the console shows: the read-side queries its pages, htmx answers and pushes share.

Every live fragment in templates/swaps/live.html is rendered from one of these
contexts, whether it is part of a full page (views.py), the answer to an htmx request
(views.py) or a websocket push (broadcast.py), so the three can never disagree.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.paginator import Paginator
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.safestring import mark_safe

from swaps import fleet_reports, permissions
from swaps.engine.reports import ReplicaReport
from swaps.models import AuditEntry, RollbackRequest, ServedModel, Swap, SwapTransition
from swaps.registry import get_model

IDLE = "Idle"
# A failed operation's badge stays on the model's card until the next operation, or for
# this long: then the card shows the model as it is, serving its version. The failure
# stays in the history and the latest operations.
FAILED_BADGE_SECONDS = 15 * 60
# A page of history or audit (the model page shows the newest, live; the rest are pages
# of their own): short enough that the model page reads on a phone.
HISTORY_LENGTH = 10
LATEST_SWAPS = 10
AUDIT_LENGTH = 15


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
    if latest is not None and _failure_of_the_past(latest):
        latest = None
    return {
        "model": served,
        "swap": latest,
        "state": latest.get_state_display() if latest else IDLE,
        "duration": duration(latest) if latest else "",
    }


def _failure_of_the_past(swap: Swap) -> bool:
    return (
        swap.state == Swap.State.FAILED
        and swap.finished_at is not None
        and (timezone.now() - swap.finished_at).total_seconds() > FAILED_BADGE_SECONDS
    )


def duration(swap: Swap) -> str:
    """How long a finished operation took, from acceptance to its final state."""
    if swap.finished_at is None:
        return ""
    return f"{(swap.finished_at - swap.created_at).total_seconds():.1f} s"


def history_context(served: ServedModel, page: Any = 1) -> dict[str, Any]:
    """`history`: one page of the model's operations, newest first, each with its
    transitions (a timeline). The model page shows the first, live; older ones are on
    the model's history pages."""
    transitions = Prefetch("transitions", queryset=SwapTransition.objects.order_by("at", "id"))
    swaps = (
        swaps_of(served.swaps.all())
        .select_related("rollback_request__decided_by")  # who approved a rollback
        .prefetch_related(transitions)
    )
    shown = Paginator(swaps, HISTORY_LENGTH).get_page(page)
    history = list(shown)
    for swap in history:
        # What the page lists: a push cuts it at the transition it announces (broadcast.py).
        swap.timeline = list(swap.transitions.all())
    return {"model": served, "history": history, "history_page": shown}


def audit_context(served: ServedModel, page: Any = 1) -> dict[str, Any]:
    """`audit`: one page of the model's audit entries, newest first (as `history`)."""
    shown = Paginator(AuditEntry.objects.filter(model=served.name), AUDIT_LENGTH).get_page(page)
    return {"model": served, "entries": list(shown), "audit_page": shown}


def swap_form_context(served: ServedModel) -> dict[str, Any]:
    """`swap-form`: from the active version to any other registered one, unless an
    operation of the model is under way (the server would refuse a second)."""
    targets = served.versions.exclude(pk=served.active_version_id).filter(
        retired_at=None, quarantined_at=None
    )
    under_way = swaps_of(served.swaps.filter(state__in=Swap.RUNNING)).first()
    return {"model": served, "swap_targets": list(targets), "under_way": under_way}


def rollback_context(served: ServedModel) -> dict[str, Any]:
    """`rollback`: a button per version this model served before, and its requests."""
    targets = served.versions.filter(
        first_served_at__isnull=False, retired_at=None, quarantined_at=None
    ).exclude(pk=served.active_version_id)
    waiting = requests_of(served.rollback_requests.filter(state=RollbackRequest.State.PENDING))
    return {"model": served, "rollback_targets": list(targets), "model_waiting": list(waiting)}


def versions_context(served: ServedModel) -> dict[str, Any]:
    """`versions`: each registered version, which one serves, and its last health check
    on each live replica (read from the replicas' reports in Redis)."""
    health = fleet_reports.health_by_version(served.name)
    rows = [(version, (health or {}).get(version.version, [])) for version in served.versions.all()]
    return {"model": served, "version_rows": rows, "fleet_unreachable": health is None}


def approvals_context() -> dict[str, Any]:
    """`approvals`: every rollback request waiting for a decision, oldest first, with
    its target's last health check on each live replica (what an approver weighs)."""
    pending = requests_of(RollbackRequest.objects.filter(state=RollbackRequest.State.PENDING))
    waiting = list(pending.order_by("created_at", "id"))
    targets = {(r.served_model.name, r.target_version.version) for r in waiting}
    health = fleet_reports.health_of(targets)
    return {
        "waiting": [
            (r, (health or {}).get((r.served_model.name, r.target_version.version), []))
            for r in waiting
        ],
        "fleet_unreachable": health is None,
    }


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
        **replicas_context(fleet_reports.live_reports(wanted_for="the dashboard")),
    }


def replicas_context(reports: list[ReplicaReport] | None) -> dict[str, Any]:
    """`replicas`: the replicas reporting now, by id (one whose heartbeat lapsed has left
    the fleet's list); None when the fleet cannot be read."""
    if reports is None:
        return {"replicas": None}
    rows = []
    for report in sorted(reports, key=lambda r: r.replica_id):
        loaded = "; ".join(
            f"{model} {', '.join(sorted(versions))}"
            for model, versions in sorted(report.loaded.items())
            if versions
        )
        rows.append(
            {
                "id": report.replica_id,
                "address": report.address,
                "started_at": report.started_at,
                "loaded": loaded,
                "inflight": sum(n for counts in report.inflight.values() for n in counts.values()),
            }
        )
    return {"replicas": rows}


# -- who is looking -----------------------------------------------------------------------------

# The controls templates/swaps/live.html marks with may-PERMISSION / may-not-PERMISSION.
CONTROLS = {
    "start-swap": permissions.START_SWAP,
    "request-rollback": permissions.REQUEST_ROLLBACK,
    "approve-rollback": permissions.APPROVE_ROLLBACK,
}
# Usernames Django's validator allows: none of them needs quoting in a CSS string.
PLAIN_USERNAME = re.compile(r"[\w.@+-]+")


def viewer_style(user: permissions.User) -> str:
    """CSS for one signed-in viewer: their controls shown, the rest replaced by a line
    saying what they need; no decision controls on their own rollback requests.

    The pushed fragments are the same for everyone who watches a page; this style, part
    of the page each viewer loaded, is what makes them theirs.
    """
    if user is None or not user.is_authenticated:
        return ""
    rules = []
    for control, permission in CONTROLS.items():
        if not user.has_perm(permission):
            rules.append(f".may-{control}{{display:none}}.may-not-{control}{{display:block}}")
    username = user.get_username()
    if user.has_perm(permissions.APPROVE_ROLLBACK) and PLAIN_USERNAME.fullmatch(username):
        mine = f'[data-requested-by="{username}"]'
        rules.append(
            f"{mine} .may-approve-rollback{{display:none}}{mine} .own-request{{display:block}}"
        )
    return "".join(rules)


def viewer(request: HttpRequest) -> dict[str, Any]:
    """Context processor: `viewer_style` for base.html."""
    # Safe: fixed rules and a username of word characters, dots, @, + and - only.
    return {"viewer_style": mark_safe(viewer_style(getattr(request, "user", None)))}
