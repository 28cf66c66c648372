"""THE hook for the console's live updates: announce what changed, nothing more.

The domain calls these after a change. Once the transaction has committed (the
console must read committed rows), a small event naming the record and its model goes
to the channel layer's CHANGES group. Every console process watching anything is in
that group (swaps/live.py) and renders the fragments itself, off this thread: an API
request or an RQ job pays one message to Redis, not the console's queries and
templates (which once cost an instant rollback a quarter of a second).
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

# The channel-layer group of the console processes' live tasks.
CHANGES = "console.changes"
EVENT = "console.changed"


def swap_changed(swap: Any) -> None:
    """A swap, rollback or deploy record changed (created, a transition, final)."""
    event = swap_event(swap)
    transaction.on_commit(lambda: announce(event))


def swap_event(swap: Any) -> dict[str, Any]:
    """The announcement of a swap record's change, with its state as the change left it:
    the console renders each state an operator should see from it, even one the record
    has left by the time the console reads the database (a Swapping that lasted 20 ms)."""
    return {
        "type": EVENT,
        "record": "swap",
        "id": swap.pk,
        "model": swap.served_model.name,
        "kind": str(swap.kind),
        "state": str(swap.state),
        "message": swap.message,
        "requests_remaining": swap.requests_remaining,
        "requests_drained": swap.requests_drained,
        "finished_at": swap.finished_at.isoformat() if swap.finished_at else None,
        "active_version_id": swap.served_model.active_version_id,
    }


def rollback_request_changed(request: Any) -> None:
    """A rollback request was made (awaiting approval) or rejected."""
    event = request_event(request)
    transaction.on_commit(lambda: announce(event))


def request_event(request: Any) -> dict[str, Any]:
    return {
        "type": EVENT,
        "record": "rollback_request",
        "id": request.pk,
        "model": request.served_model.name,
    }


def announce(event: dict[str, Any]) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(CHANGES, event)
    except Exception:  # a live update failing must never undo or fail the change
        log.exception("could not announce %s to the console", event)
