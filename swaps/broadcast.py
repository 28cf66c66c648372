"""Where the browser is told: render the live fragments and send them to who watches.

The ONE module that pushes to the console, and it runs only in the console process:
the process that made a change (an API request, an RQ job) just announces it
(swaps/notify.py), and the console's live task (swaps/live.py) hands each burst of
announcements to `render_states` and then `render_rest` here, off the request and
job threads.

Each message is HTML whose top-level elements carry the stable ids of
templates/swaps/live.html; htmx's ws extension swaps each element into the page by
its id. Chart points travel the same way as a JSON text frame, which console.js takes.

The sockets of this process register in `watchers` under the page they show (a
model's page, or the dashboard with the approvals queue). Each change burst renders a
fragment once for every page somebody here watches, and not at all for the others.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.template.loader import render_to_string

from swaps import console, live
from swaps.models import ServedModel, Swap
from swaps.refusals import NotFound
from swaps.registry import get_model

log = logging.getLogger(__name__)

# What a socket watches: a model's page (the model's name), the dashboard (None), which
# shows every model's state and the approvals queue, or the approvals page (the queue
# alone; no model is named so: NAME_PATTERN). A page is sent only the fragments it has
# an element for (htmx logs an error for every other).
DASHBOARD = None
APPROVALS = ":approvals"
LIVE = "swaps/live.html"

Page = str | None
Send = Callable[[str], Awaitable[None]]

# The console renders on a thread of its own. database_sync_to_async's default runs on
# the one thread every sync view of this process runs on (asgiref's thread_sensitive),
# so a render queued the API request that made the change behind it: a rollback
# answered ~50 ms after its flip, the render of its own transitions in front of it.
_render_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-render")


def off_requests(render: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """`render` as a coroutine run on the console's render thread, with Django's
    database connection handling (a connection of that thread's own)."""
    return database_sync_to_async(render, thread_sensitive=False, executor=_render_thread)


class Watchers:
    """The open console sockets of this process, by the page each one shows."""

    def __init__(self) -> None:
        self._pages: dict[Page, set[Send]] = {}

    def add(self, page: Page, send: Send) -> None:
        self._pages.setdefault(page, set()).add(send)

    def discard(self, page: Page, send: Send) -> None:
        sockets = self._pages.get(page)
        if sockets is not None:
            sockets.discard(send)
            if not sockets:
                del self._pages[page]

    def watched(self, page: Page) -> bool:
        return page in self._pages

    def pages(self) -> list[Page]:
        return list(self._pages)

    async def send(self, page: Page, text: str) -> None:
        for send in list(self._pages.get(page, ())):
            try:
                await send(text)
            except Exception:  # one socket closing as we send must not starve the others
                log.warning("console: could not push to a socket of %s", page or "the dashboard")


watchers = Watchers()


@dataclass
class Changes:
    """What changed since the last render: a burst of announcements, merged.

    `swaps`: per model whose swap, rollback or deploy records changed, their events in
    order (each state it went through is shown; the history, audit and the dashboard's
    latest swaps once). `requests`: models whose rollback requests changed (their
    rollback panel). `approvals`: the approvals queue changed. `everything`: render
    every watched page in full (announcements may have been missed, as while Redis was
    away).
    """

    swaps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: set[str] = field(default_factory=set)
    approvals: bool = False
    everything: bool = False

    def add(self, announcement: dict[str, Any]) -> None:
        """Merge one announcement (an event of swaps/notify.py) into the burst."""
        model, record = announcement.get("model"), announcement.get("record")
        if not isinstance(model, str):
            return
        if record == "swap":
            self.swaps.setdefault(model, []).append(announcement)
            # An approved rollback request left the queue as its rollback began.
            self.approvals |= announcement.get("kind") == Swap.Kind.ROLLBACK
        elif record == "rollback_request":
            self.requests.add(model)
            self.approvals = True

    def states(self, model: str) -> list[dict[str, Any]]:
        """The model's swap events to show, one per state in a row of the same record:
        the drain's count updates while Draining are shown as their latest."""
        shown: list[dict[str, Any]] = []
        for event in self.swaps.get(model, []):
            if shown and (shown[-1]["id"], shown[-1]["state"]) == (event["id"], event["state"]):
                shown[-1] = event
            else:
                shown.append(event)
        return shown

    def merge(self, other: Changes) -> None:
        for model, events in other.swaps.items():
            self.swaps.setdefault(model, []).extend(events)
        self.requests |= other.requests
        self.approvals |= other.approvals
        self.everything |= other.everything

    def __bool__(self) -> bool:
        return bool(self.swaps or self.requests or self.approvals or self.everything)


async def render_states(changes: Changes, *, states_sent: Callable[[], None]) -> None:
    """Render and send the states `changes` went through, for the pages watched here.

    The states are what an operator watches: each goes out at once, in a message of its
    own (so each is shown, however short it lasted), and `states_sent` is called then
    (the live task publishes the counts at once, so a version that just stopped serving
    does not read "serving" for a beat). A full render (`everything`) sends every
    watched page its snapshot instead.
    """
    if changes.everything:
        for page in watchers.pages():
            await watchers.send(page, await off_requests(snapshot)(page))
        states_sent()
        return
    states = await off_requests(_render_states)(changes)
    for page, html in states:
        await watchers.send(page, html)
    if states:
        states_sent()


async def render_rest(changes: Changes) -> None:
    """Render and send the rest of what `changes` touched (histories, audit logs, the
    versions, rollback and swap panels, the latest swaps, the approvals queue), one
    message per watched page."""
    if changes.everything:
        return  # the snapshots had it all
    for page, html in await off_requests(_render_rest)(changes):
        await watchers.send(page, html)


def _render_states(changes: Changes) -> list[tuple[Page, str]]:
    messages: list[tuple[Page, str]] = []
    dashboard = watchers.watched(DASHBOARD)
    # The dashboard's latest swaps go with each state, as that state left them: the card
    # and the table beside it never disagree (a card said Completed while the table
    # still said Draining until the rest was rendered).
    latest_swaps = console.latest_swaps_context()["latest_swaps"] if dashboard else []
    for served in _watched_models(set(changes.swaps), dashboard_too=True):
        latest = console.swaps_of(served.swaps.all()).first()
        versions = {version.pk: version for version in served.versions.all()}
        # The model page's history goes with each state too, as that state left it (the
        # card said Draining while the history beside it still said Swapping).
        page = console.history_context(served) if watchers.watched(served.name) else None
        for event in changes.states(served.name):
            state = fragment("swap-state", _state_at(served, latest, versions, event))
            if page is not None:
                history = {**page, "history": _as_announced(page["history"], event)}
                messages.append((served.name, state + fragment("history", history)))
            if dashboard:
                table = {"latest_swaps": _as_announced(latest_swaps, event)}
                messages.append((DASHBOARD, state + fragment("latest-swaps", table)))
    return messages


def _as_announced(swaps: list[Swap], event: dict[str, Any]) -> list[Swap]:
    """`swaps` with the announced one in the state its announcement gives, and its
    timeline (a history's) up to the transition the announced change wrote."""
    shown = []
    for swap in swaps:
        if swap.pk == event["id"]:
            swap = copy.copy(swap)
            swap.state = event["state"]
            cut = event.get("transition_id")
            if hasattr(swap, "timeline") and cut is not None:
                swap.timeline = [row for row in swap.timeline if row.pk <= cut]
        shown.append(swap)
    return shown


def _state_at(
    served: ServedModel, latest: Swap | None, versions: dict[int, Any], event: dict[str, Any]
) -> dict[str, Any]:
    """The state card as the announced change left it. A change to an older operation
    than the model's latest (a late settle) shows the latest as it stands."""
    if latest is None or latest.pk != event["id"]:
        return console.state_context(served)
    latest.state = event["state"]
    latest.message = event["message"]
    latest.requests_remaining = event["requests_remaining"]
    latest.requests_drained = event["requests_drained"]
    finished = event["finished_at"]
    latest.finished_at = datetime.fromisoformat(finished) if finished else None
    served.active_version = versions.get(event["active_version_id"])
    return console.state_context(served, latest)


def _render_rest(changes: Changes) -> list[tuple[Page, str]]:
    messages: list[tuple[Page, str]] = []
    approvals = ""  # the queue: the dashboard's and the approvals page's, rendered once
    if changes.approvals and (watchers.watched(DASHBOARD) or watchers.watched(APPROVALS)):
        approvals = fragment("approvals", console.approvals_context())
    if watchers.watched(DASHBOARD):
        dashboard = []
        if changes.swaps:
            dashboard.append(fragment("latest-swaps", console.latest_swaps_context()))
        if approvals:
            dashboard.append(approvals)
        if dashboard:
            messages.append((DASHBOARD, "".join(dashboard)))
    if approvals and watchers.watched(APPROVALS):
        messages.append((APPROVALS, approvals))
    for served in _watched_models(set(changes.swaps) | changes.requests, dashboard_too=False):
        # Not the history: it went with the states (and a rollback request is not in it).
        messages.append((served.name, "".join(_model_fragments(served, history=False))))
    return messages


def _watched_models(models: set[str], *, dashboard_too: bool) -> list[ServedModel]:
    """The models of `models` whose page somebody here watches (all of them, when the
    dashboard is watched and `dashboard_too`), read once each; one deleted is left out."""
    dashboard = dashboard_too and watchers.watched(DASHBOARD)
    found = []
    for name in sorted(models):
        if dashboard or watchers.watched(name):
            try:
                found.append(get_model(name))
            except NotFound:
                continue
    return found


async def pending_counts(model: str, rows: list[dict[str, Any]]) -> None:
    """Requests in flight (and served per second) on each version of `model`, fleet-wide."""
    pages = [page for page in (DASHBOARD, model) if watchers.watched(page)]
    if not pages:
        return
    html = fragment("pending", {"model_name": model, "rows": rows})
    for page in pages:
        await watchers.send(page, html)


async def replicas(reports: list[Any]) -> None:
    """The dashboard's list of live replicas, when it changed (a replica joined, left,
    loaded or unloaded a version, or its requests in flight moved)."""
    if not watchers.watched(DASHBOARD):
        return
    html = fragment("replicas", console.replicas_context(reports))
    if html != _last_sent.get("replicas"):
        _last_sent["replicas"] = html
        await watchers.send(DASHBOARD, html)


# What was last pushed of a fragment sent only when it changes (a page that connects
# gets it in its snapshot).
_last_sent: dict[str, str] = {}


async def traffic(model: str, *, at: float, rates: dict[str, float]) -> None:
    """One chart point: requests per second served by each version of `model` at `at`."""
    point = json.dumps({"kind": "traffic", "model": model, "t": at, "rates": rates})
    for page in (DASHBOARD, model):
        await watchers.send(page, point)


def fragment(partial: str, context: dict[str, Any]) -> str:
    """One partial of live.html, exactly as the page and the htmx answers render it."""
    return render_to_string(f"{LIVE}#{partial}", context)


def snapshot(model: str | None) -> str:
    """What a page just (re)connected shows live, as it stands now: the fragments sent
    while it was not connected are not replayed, so a page never shows a stale state.
    `model` is None for the dashboard; "" for a model that does not exist."""
    if model == APPROVALS:
        return fragment("approvals", console.approvals_context())
    if model is None:
        context = console.dashboard_context()
        return "".join(
            [
                *(fragment("swap-state", card) for card in context["cards"]),
                fragment("latest-swaps", context),
                fragment("approvals", context),
                fragment("replicas", context),
                live.chart_history(card["model"].name for card in context["cards"]),
            ]
        )
    try:
        served = get_model(model)
    except NotFound:
        return ""
    return fragment("swap-state", console.state_context(served)) + "".join(
        [*_model_fragments(served), live.chart_history([served.name])]
    )


def _model_fragments(served: Any, *, history: bool = True) -> list[str]:
    return [
        fragment("versions", console.versions_context(served)),
        *([fragment("history", console.history_context(served))] if history else []),
        fragment("audit", console.audit_context(served)),
        fragment("rollback", console.rollback_context(served)),
        fragment("swap-form", console.swap_form_context(served)),
    ]
