"""THE hook for the console's live updates: tell `swaps.broadcast` what changed.

The domain calls these after a change; they wait for the transaction to commit, then
hand the record to `swaps/broadcast.py` (the console's module: it renders the partials
and sends them to the model's websocket group). Until that module exists there is
nobody to tell, and they do nothing.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)


def swap_changed(swap: Any) -> None:
    """A swap, rollback or deploy record changed (created, a transition, final)."""
    transaction.on_commit(lambda: _send("swap_changed", swap))


def rollback_request_changed(request: Any) -> None:
    """A rollback request was made (awaiting approval) or rejected."""
    transaction.on_commit(lambda: _send("rollback_request_changed", request))


def _send(function: str, record: Any) -> None:
    if importlib.util.find_spec("swaps.broadcast") is None:
        return
    from swaps import broadcast  # type: ignore[attr-defined]

    try:
        getattr(broadcast, function)(record)
    except Exception:  # a live update failing must never undo or fail the change
        log.exception("broadcast.%s failed for %s", function, record)
