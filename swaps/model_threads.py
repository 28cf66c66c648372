"""The threads models run on, so the event loop never waits on a model.

A replica's event loop answers health checks and sends its heartbeats; a model that
hangs on some input must not stop either. So every `predict` runs on one of these
threads. They are a plain queue and a few daemon threads rather than a
`ThreadPoolExecutor`: measured per request under concurrency (bench/serving.py), the
executor's futures cost about three times as much as this hop, and its threads are
joined at exit, so one hanging model would keep the process from ever stopping.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")


class ModelThreads:
    def __init__(self, count: int, *, name: str = "model") -> None:
        if count < 1:
            raise ValueError("ModelThreads needs at least one thread")
        self._queue: SimpleQueue = SimpleQueue()
        self._count = count
        self._name = name
        self._started = False

    def run(self, function: Callable[[Any], T], argument: Any) -> asyncio.Future[T]:
        """`function(argument)` on a model thread; await the result on the calling loop."""
        if not self._started:  # on first use: importing the console starts no threads
            self._started = True
            for number in range(self._count):
                threading.Thread(
                    target=self._work, name=f"{self._name}-{number}", daemon=True
                ).start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((loop, future, function, argument))
        return future

    def _work(self) -> None:
        while True:
            loop, future, function, argument = self._queue.get()
            try:
                outcome = (True, function(argument))
            except BaseException as exc:  # handed to the awaiting request, never lost
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:
                pass  # the loop closed while the model ran: nobody is waiting any more


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
