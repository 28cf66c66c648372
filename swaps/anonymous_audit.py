"""How many refused attempts of callers with no valid credentials reach the audit log.

Anyone can make such an attempt, for free: 200 anonymous POSTs wrote 200 audit entries
and pushed everything else out of the model's audit panel. From one address, the first
ANONYMOUS_KEPT of a window are audited as before; the rest are counted, and the next
one audited (in a later window) says how many went unrecorded before it, so nothing is
hidden, only folded. Counted per console process (Django's cache): with several, each
keeps its own share.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from time import monotonic

from django.core.cache import cache

log = logging.getLogger(__name__)

ANONYMOUS_KEPT = 20
WINDOW_SECONDS = 60.0
SUPPRESSING = (
    "more than %d refused attempts without credentials from %s in %g s: counting the "
    "rest instead of auditing each"
)


@dataclass
class _Window:
    started: float
    audited: int = 0
    unrecorded: int = 0  # since the last one audited


def admit(address: str) -> int | None:
    """None: do not audit this refusal (it is counted). Otherwise audit it, noting the
    number returned: how many from `address` went unrecorded before it."""
    key = f"swaps:anonymous-refusals:{address}"
    now = monotonic()
    window: _Window = cache.get(key) or _Window(started=now)
    if now - window.started >= WINDOW_SECONDS:
        window = _Window(started=now, unrecorded=window.unrecorded)
    if window.audited >= ANONYMOUS_KEPT:
        if window.unrecorded == 0:
            log.warning(SUPPRESSING, ANONYMOUS_KEPT, address, WINDOW_SECONDS)
        window.unrecorded += 1
        cache.set(key, window, timeout=None)
        return None
    unrecorded, window.unrecorded = window.unrecorded, 0
    window.audited += 1
    cache.set(key, window, timeout=None)
    return unrecorded
