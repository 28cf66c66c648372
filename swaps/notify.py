"""THE hook for the console's live updates: tell `swaps.broadcast` what changed.

The domain calls these after a change; they wait for the transaction to commit (the
pushed fragments must show committed rows), then hand the record to broadcast.py,
which renders the fragments and sends them to the websocket groups.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from swaps import broadcast

log = logging.getLogger(__name__)


def swap_changed(swap: Any) -> None:
    """A swap, rollback or deploy record changed (created, a transition, final)."""
    transaction.on_commit(lambda: _send(broadcast.swap_changed, swap))


def rollback_request_changed(request: Any) -> None:
    """A rollback request was made (awaiting approval) or rejected."""
    transaction.on_commit(lambda: _send(broadcast.rollback_request_changed, request))


def _send(function: Any, record: Any) -> None:
    try:
        function(record)
    except Exception:  # a live update failing must never undo or fail the change
        log.exception("%s failed for %s", function.__qualname__, record)
