"""Where the browser is told: render a live fragment and send it to a websocket group.

The ONE module that pushes to the console. Each message is HTML whose top-level
elements carry the stable ids of templates/swaps/live.html; the consumer forwards it
as it is, and htmx's ws extension swaps each element into the page by its id. Chart
points travel the same way as a JSON text frame, which the page's console.js takes.

Groups: "dashboard" (the dashboard and the approvals queue) and "model.<name>" (a
model's page). `swap_changed` and `rollback_request_changed` are called by
swaps/notify.py once the change has committed; `pending_counts` and `traffic` by the
console's publisher (swaps/live.py), a few times a second at most, never per request.
"""

from __future__ import annotations

import json
import re
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from swaps import console
from swaps.models import RollbackRequest, Swap
from swaps.refusals import NotFound
from swaps.registry import get_model

DASHBOARD = "dashboard"
LIVE = "swaps/live.html"
# Channel-layer group names: ASCII letters, digits, '-', '_' or '.', under 100 characters.
_NOT_GROUP_CHARACTER = re.compile(r"[^A-Za-z0-9._-]")


def model_group(name: str) -> str:
    return "model." + _NOT_GROUP_CHARACTER.sub("_", name)[:80]


def fragment(partial: str, context: dict[str, Any]) -> str:
    """One partial of live.html, exactly as the page and the htmx answers render it."""
    return render_to_string(f"{LIVE}#{partial}", context)


def swap_changed(swap: Swap) -> None:
    """A swap, rollback or deploy changed: its model's state, history and audit log."""
    served = get_model(swap.served_model.name)
    group = model_group(served.name)
    # The state is what an operator watches: it goes out before the rest is rendered,
    # and the counts follow it at once (they are the publisher's to send: wake it).
    state = fragment("swap-state", console.state_context(served))
    send_many([(DASHBOARD, [state]), (group, [state])], wake_counts=True)
    dashboard = [fragment("latest-swaps", console.latest_swaps_context())]
    if swap.kind == Swap.Kind.ROLLBACK:  # an approved request left the queue
        dashboard.append(fragment("approvals", console.approvals_context()))
    send_many([(DASHBOARD, dashboard), (group, _model_fragments(served))])


def rollback_request_changed(request: RollbackRequest) -> None:
    """A rollback request now waits for approval, or was rejected."""
    served = get_model(request.served_model.name)
    send(DASHBOARD, fragment("approvals", console.approvals_context()))
    send(model_group(served.name), *_model_fragments(served))


async def pending_counts(model: str, rows: list[dict[str, Any]]) -> None:
    """Requests in flight (and served per second) on each version of `model`, fleet-wide."""
    html = fragment("pending", {"model_name": model, "rows": rows})
    await asend(DASHBOARD, html)
    await asend(model_group(model), html)


async def traffic(model: str, *, at: float, rates: dict[str, float]) -> None:
    """One chart point: requests per second served by each version of `model` at `at`."""
    point = json.dumps({"kind": "traffic", "model": model, "t": at, "rates": rates})
    layer = get_channel_layer()
    for group in (DASHBOARD, model_group(model)):
        await layer.group_send(group, {"type": "chart", "point": point})


def send(group: str, *fragments: str) -> None:
    async_to_sync(asend)(group, *fragments)


def send_many(messages: list[tuple[str, list[str]]], *, wake_counts: bool = False) -> None:
    """Several groups' fragments in one hop to the channel layer; then, if asked, wake
    the live-counts publisher of every console process that has watchers in them."""

    async def push() -> None:
        layer = get_channel_layer()
        for group, fragments in messages:
            await asend(group, *fragments)
        if wake_counts:
            for group, _ in messages:
                await layer.group_send(group, {"type": "counts.wake"})

    async_to_sync(push)()


def snapshot(model: str | None) -> str:
    """What a page just (re)connected shows live, as it stands now: the fragments sent
    while it was not connected are not replayed, so a page never shows a stale state.
    `model` is None for the dashboard; "" for a model that does not exist."""
    if model is None:
        context = console.dashboard_context()
        return "".join(
            [
                *(fragment("swap-state", card) for card in context["cards"]),
                fragment("latest-swaps", context),
                fragment("approvals", context),
            ]
        )
    try:
        served = get_model(model)
    except NotFound:
        return ""
    return fragment("swap-state", console.state_context(served)) + "".join(_model_fragments(served))


async def asend(group: str, *fragments: str) -> None:
    await get_channel_layer().group_send(group, {"type": "html", "html": "".join(fragments)})


def _model_fragments(served: Any) -> list[str]:
    return [
        fragment("versions", console.versions_context(served)),
        fragment("history", console.history_context(served)),
        fragment("audit", console.audit_context(served)),
        fragment("rollback", console.rollback_context(served)),
        fragment("swap-form", console.swap_form_context(served)),
    ]
