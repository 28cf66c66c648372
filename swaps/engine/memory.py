"""How much memory something allocated and kept: what a model costs once it is loaded.

Two instruments, and the larger reading wins, because each is blind where the other sees:

- tracemalloc counts Python and numpy allocations exactly, even when they land in pages
  the process had already freed and kept (which leave RSS unchanged), but it never sees
  native allocators such as ONNX Runtime's arena or a C++ model's weights.
- The resident set size (psutil) sees every page the process touches, native ones
  included, but misses allocations that reuse freed memory, and it errs high by
  tracemalloc's own bookkeeping while both run. For a limit check erring high is the safe
  side.
"""

from __future__ import annotations

import gc
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

# Both instruments read the whole process, so two measurements at once would count each
# other's allocations (and one could stop tracemalloc under the other): one at a time.
_MEASURING = threading.Lock()


@dataclass
class RetainedMemory:
    """Filled in when the measured block ends."""

    traced_bytes: int = 0
    rss_bytes: int = 0

    @property
    def bytes(self) -> int:
        return max(self.traced_bytes, self.rss_bytes)


def _rss() -> int:
    return psutil.Process().memory_info().rss


@contextmanager
def measure_retained_memory() -> Iterator[RetainedMemory]:
    """Measure the memory the block allocates and still holds when it ends.

    Starts tracemalloc only if nobody else is tracing and leaves it as it found it.
    Other threads keep running; what they allocate and free meanwhile nets out, but they
    run slower while tracemalloc is on, so keep the block to the load itself.
    """
    with _MEASURING:
        started_tracing = not tracemalloc.is_tracing()
        # Collect first so garbage freed during the block is not credited to it.
        gc.collect()
        if started_tracing:
            tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0]
        rss_before = _rss()
        retained = RetainedMemory()
        try:
            yield retained
        finally:
            gc.collect()
            retained.traced_bytes = max(tracemalloc.get_traced_memory()[0] - traced_before, 0)
            retained.rss_bytes = max(_rss() - rss_before, 0)
            if started_tracing:
                tracemalloc.stop()
