"""The threads models run on, so the event loop never waits long on a model.

A replica's event loop answers health checks and sends its heartbeats; a model that
hangs on some input must not stop either. So every `predict` runs on one of these
threads. They are a plain queue and a few daemon threads rather than a
`ThreadPoolExecutor`: the executor's futures cost about three times as much as this
hop, and its threads are joined at exit, so one hanging model would keep the process
from ever stopping.

How the hop is paid. Each predict handed to a thread of its own while the loop went on
parsing requests made the threads fight for the interpreter lock. For iris a replica
spent 255-316 us of CPU per request that way and 214-258 us this way, and served 4-25 %
more requests per second this way at about the same p99 (four quiet runs of
`bench/serving.py --before` on this 2-core host); for a random forest, eight threads
predicting at once served 0.53-0.78 times MLServer's rate where one thread served 1.10
times (bench/peers.py). So, for each key (a version: `swaps.inference`):

- the predicts asked for in one tick of the loop travel together, as one `_Group`;
- a group goes to a thread, and while that thread is still working through it, the
  next ticks' predicts of the same version join it rather than wake another thread:
  one thread per busy version, uncontended while its predicts are quick; another
  version's requests never queue behind it;
- for a new group the loop waits, up to `WAIT_SECONDS` for all of a tick's groups and
  with the lock released, and settles every answer itself: the hop then costs two
  switches per tick, not two per request. It waits only for versions whose last group
  finished within that time (behind a slow one each tick would lose it for nothing);
  later answers wake the loop once for as many as have finished;
- a group that gives no answer for `RESCUE_SECONDS` (a slow predict, or one that hangs)
  is handed to one more thread, up to `count`: slow predicts that release the lock
  still run side by side, and a model that hangs costs the requests queued behind it
  at most that delay, and one thread, as it always did.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")

# What the loop may lose to one tick's predicts before it leaves them to their thread:
# a fraction of a health check's timeout, many quick predicts.
WAIT_SECONDS = 0.005
# Far longer than a quick predict; short enough that the requests queued behind a
# hanging one are answered about as fast as a client notices.
RESCUE_SECONDS = 0.05

Job = tuple[asyncio.Future, Callable[[Any], Any], Any]


class ModelThreads:
    def __init__(self, count: int, *, name: str = "model") -> None:
        if count < 1:
            raise ValueError("ModelThreads needs at least one thread")
        self._queue: SimpleQueue[_Group] = SimpleQueue()
        self._count = count
        self._name = name
        self._started = False
        # Per key (a version: swaps.inference): a slow version's queue never holds up
        # another's, each busy version has a thread of its own.
        self._asked: dict[Hashable, list[Job]] = {}  # this tick's, not handed over yet
        self._open: dict[Hashable, _Group] = {}  # the groups threads are working through
        self._slow: set[Hashable] = set()  # keys whose last group outlived WAIT_SECONDS

    def run(
        self, function: Callable[[Any], T], argument: Any, *, key: Hashable = None
    ) -> asyncio.Future[T]:
        """`function(argument)` on a model thread; await the result on the calling loop.

        `key`: what the job belongs to (its version): jobs of one key queue behind each
        other on one thread while they are quick, never behind another key's."""
        if not self._started:  # on first use: importing the console starts no threads
            self._started = True
            for number in range(self._count):
                threading.Thread(
                    target=self._work, name=f"{self._name}-{number}", daemon=True
                ).start()
        loop = asyncio.get_running_loop()
        if not self._asked:
            loop.call_soon(self._hand_over, loop)  # once this tick's requests asked
        future = loop.create_future()
        self._asked.setdefault(key, []).append((future, function, argument))
        return future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        asked, self._asked = self._asked, {}
        waited: list[tuple[Hashable, _Group]] = []
        for key, jobs in asked.items():
            group = self._open.get(key)
            if group is not None and group.loop is loop and group.join(jobs):
                continue  # its thread takes them next; their answers wake the loop
            wait = key not in self._slow
            group = self._open[key] = _Group(loop, jobs, loop_waits=wait)
            self._hand(group)
            if wait:
                waited.append((key, group))
            else:
                loop.call_later(RESCUE_SECONDS, self._watch, key, group)
        deadline = time.perf_counter() + WAIT_SECONDS
        for key, group in waited:
            group.wait(deadline - time.perf_counter())
            if not group.finished:
                self._slow.add(key)  # until its groups are quick again (`_watch`)
                # Only a group the wait did not see through needs watching: a quick
                # tick schedules no timer.
                loop.call_later(RESCUE_SECONDS, self._watch, key, group)
        for _, group in waited:
            group.settle()

    def _watch(self, key: Hashable, group: _Group) -> None:
        """Every RESCUE_SECONDS until the group is done: answer what has finished, and
        give it one more thread if it answered nothing since the last look."""
        group.settle()
        if group.finished:
            if self._open.get(key) is group:
                del self._open[key]
                self._slow.discard(key)  # the slow stretch is over: wait for the next one
            return
        if group.answered == group.answered_at_last_look and group.jobs and not group.queued:
            self._hand(group)  # another thread pops from the same jobs
        group.answered_at_last_look = group.answered
        group.loop.call_later(RESCUE_SECONDS, self._watch, key, group)

    def _hand(self, group: _Group) -> None:
        # In the queue once at most: with every thread stuck, the watch must not pile up
        # hand-overs that nobody takes.
        group.queued = True
        self._queue.put(group)

    def _work(self) -> None:
        while True:
            group = self._queue.get()
            group.queued = False
            while (job := group.next_job()) is not None:
                future, function, argument = job
                try:
                    outcome = (future, True, function(argument))
                except BaseException as exc:  # handed to the awaiting request, never lost
                    outcome = (future, False, exc)
                group.answer(outcome)


class _Group:
    """Jobs of one loop that threads work through, and their answers not yet settled.

    The deques are shared by the loop and every thread on the group (appends and pops
    are atomic: no job runs twice). The lock orders a join against the last thread
    finding nothing left, so no job is stranded in a group nobody works on; and "the
    loop stopped waiting" against "a thread answered", so every answer is settled
    once, by the waiting loop or through a wake-up of it.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, jobs: list[Job], *, loop_waits: bool
    ) -> None:
        """`loop_waits`: the loop will wait for this group and settle its answers itself;
        until it stops waiting, answers do not wake it. A group it will not wait for
        wakes it from the first answer on."""
        self.loop = loop
        self.jobs: deque[Job] = deque(jobs)
        self.answers: deque[tuple[asyncio.Future, bool, Any]] = deque()
        self.asked = len(jobs)
        self.answered = 0
        self.answered_at_last_look = 0
        self.queued = False  # handed to the threads and not taken yet
        self.finished = False  # closed, and every job answered
        self._closed = False  # nothing joins any more
        self._lock = threading.Lock()
        self._all_answered = threading.Event()
        self._loop_waits = loop_waits
        self._waking = False  # a settle is already scheduled on the loop

    def join(self, jobs: list[Job]) -> bool:
        with self._lock:
            if self._closed:
                return False
            self.jobs.extend(jobs)
            self.asked += len(jobs)
            return True

    def next_job(self) -> Job | None:
        with self._lock:
            if self.jobs:
                return self.jobs.popleft()
            self._closed = True
            self._check_finished()
            return None

    def answer(self, outcome: tuple[asyncio.Future, bool, Any]) -> None:
        self.answers.append(outcome)
        with self._lock:
            self.answered += 1
            self._check_finished()
            if self._loop_waits or self._waking:
                return
            self._waking = True
        try:
            self.loop.call_soon_threadsafe(self.settle)
        except RuntimeError:
            pass  # the loop closed while the model ran: nobody is waiting any more

    def _check_finished(self) -> None:  # with the lock held
        if self._closed and self.answered == self.asked and not self.finished:
            self.finished = True
            self._all_answered.set()

    def wait(self, seconds: float) -> None:
        """Until every job is answered, or `seconds`: answers after that wake the loop."""
        if seconds <= 0 or not self._all_answered.wait(seconds):
            with self._lock:
                self._loop_waits = False

    def settle(self) -> None:
        with self._lock:
            self._waking = False  # an answer from now on wakes the loop again
        while self.answers:
            future, ok, value = self.answers.popleft()
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
