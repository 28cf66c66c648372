"""THE hook for the console's live updates: announce what changed, nothing more.

The domain calls these after a change. Once the transaction has committed (the
console must read committed rows), a small event naming the record and its model goes
to the channel layer's CHANGES group. Every console process watching anything is in
that group (swaps/live.py) and renders the fragments itself, off this thread: an API
request or an RQ job pays one message to Redis, not the console's queries and
templates (which once cost an instant rollback a quarter of a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
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
    has left by the time the console reads the database (a Swapping that lasted 20 ms),
    and the record's history up to the transition row the change wrote."""
    latest = getattr(swap, "latest_transition", None)  # set by lifecycle.transition
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
        "transition_id": latest.pk if latest is not None else None,
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


# How long after a flip ended the console still waits: the flip's API answer is on its
# way out through this process (the view returned; Django and daphne still write it).
ANSWER_GRACE = 0.03


class Flips:
    """The route flips under way in this process (a rollback's request or approval).

    The console's renders in this process wait for them (swaps/live.py), for at most a
    moment: a flip's own transitions are announced as it goes, and rendering them then
    took the CPU and the interpreter from the flip, whose API answer came 50 ms after
    the replicas flipped instead of 20. They also wait ANSWER_GRACE after the last flip
    ended, while its answer is written. The console shows the states a moment later.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._ended_at = -math.inf
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @contextlib.contextmanager
    def flipping(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                self._ended_at = time.monotonic()
                done = [] if self._running else self._waiting
                if done:
                    self._waiting = []
            for loop, over in done:
                with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                    loop.call_soon_threadsafe(over.set)

    async def over(self, timeout: float) -> None:
        """Return once no flip runs in this process and the last one's answer is out,
        or after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            over = asyncio.Event()
            with self._lock:
                running = self._running > 0
                if running:
                    self._waiting.append((asyncio.get_running_loop(), over))
                grace = self._ended_at + ANSWER_GRACE - time.monotonic()
            if running:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(over.wait(), left)
            elif grace > 0:
                await asyncio.sleep(min(grace, left))
            else:
                return


flips = Flips()


def announce(event: dict[str, Any]) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(CHANGES, event)
    except Exception:  # a live update failing must never undo or fail the change
        log.exception("could not announce %s to the console", event)
