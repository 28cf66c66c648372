"""The RQ worker class `manage.py rqworker` uses (settings.RQ["WORKER_CLASS"]).

It is RQ's forking worker plus the control plane's upkeep, run where RQ runs its own
registry maintenance: when the worker starts (before its first job), and then every
HOTSWAP_SWEEP_INTERVAL while it is idle. At start it republishes the fleet state from
the database; each time it sweeps for operations whose runner died (recovery.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from django.conf import settings
from django.db import connections
from rq.exceptions import StopRequested
from rq.worker import Worker

from swaps import fleet_state, job_queue, recovery

log = logging.getLogger(__name__)


# While Redis is unreachable the worker tries again after 1 s, doubling up to this.
REDIS_RETRY_MAX_SECONDS = 30.0
# How long RQ's command listener (a thread) waits in one poll; its stop waits that long.
COMMAND_POLL_SECONDS = 1.0


class SweepingWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maintenance_interval", settings.HOTSWAP_SWEEP_INTERVAL)
        # Always JSON: `rqworker` passes RQ's pickle serializer unless told otherwise, and
        # unpickling a job a writer of Redis queued would run its code.
        kwargs["serializer"] = job_queue.SERIALIZER
        super().__init__(*args, **kwargs)
        self._published_at_start = False

    @property
    def dequeue_timeout(self) -> int:
        # RQ checks for maintenance only between blocking waits for a job: cap the wait
        # at the sweep interval, or an idle worker would sweep every worker_ttl instead.
        return max(1, min(super().dequeue_timeout, int(self.maintenance_interval)))

    def subscribe(self) -> None:
        # RQ's, but with a short poll. RQ unsubscribes and then stops the listener, and
        # redis-py 8 joins it without a limit: a listener that saw the unsubscribe first
        # waits out its whole poll (RQ's is 60 s) for a subscription, so a warm shutdown
        # on a busy host hung for a minute (or until Kubernetes' SIGKILL).
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=COMMAND_POLL_SECONDS,
            daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        # RQ retries a lost Redis only inside its wait for a job: losing it as the worker
        # turns idle (its first write, outside that retry) made the worker quit, and with
        # it the sweep that republishes a Redis that came back empty.
        wait = 1.0
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except redis.exceptions.ConnectionError as exc:
                log.error("Redis is unreachable (%s); trying again in %g s", exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, REDIS_RETRY_MAX_SECONDS)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        try:
            if not self._published_at_start:
                self._published_at_start = True
                fleet_state.republish_at_startup()
            recovery.sweep()
        except StopRequested:
            # RQ's SIGTERM handler raises this wherever an idle worker happens to be; taken
            # for a failed sweep, it left the worker running until it was killed.
            raise
        except Exception:  # upkeep failing must not stop the worker from taking jobs
            log.exception("the recovery sweep failed; it runs again next interval")
        finally:
            # Work horses are forked from this process: they must not share its sockets.
            connections.close_all()
