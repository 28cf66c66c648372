"""Runner leases: who is running a swap's operation right now, as a key that expires.

Whoever drives an operation through the engine (a swap job, the request that flips a
rollback, the job that drains it, a recovery job) holds the swap's lease and renews it
while it works. A lease that lapses means its runner died, on any host: that is what
the recovery sweep looks for. Taking a lease is exclusive (SET NX), so two runners never
drive one operation.

A runner may hand its lease over to the job that carries the operation on (a
rollback's request flips the route, its drain job drains): the lease never lapses in
between, so the sweep never mistakes the hand-over for a dead runner, and the job
never finds the lease still held by the runner that queued it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator

import redis
from django.conf import settings
from redis.asyncio import Redis as AsyncRedis

from swaps.engine.errors import FleetUnavailable
from swaps.engine.fleet_keys import REDIS_DOWN, UNREACHABLE

log = logging.getLogger(__name__)

LEASE_HELD = "swap {swap_id} is already being run by {holder}"

# Delete or renew the lease only while it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Take the lease if it is free, or if it was handed over to the one taking it.
TAKE = """
local held = redis.call('GET', KEYS[1])
if held == false or held == ARGV[2] then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
end
return false
"""
# Hand the lease over only while it is still ours.
HAND_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return false
"""
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class LeaseHeld(Exception):
    """Another runner holds the swap's lease."""


def lease_key(swap_id: int) -> str:
    return f"{settings.HOTSWAP_NAMESPACE}:lease:swap:{swap_id}"


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


SOCKET_TIMEOUT = 2.0


def sync_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
    )


def leased_swaps(swap_ids: list[int]) -> set[int]:
    """Which of these swaps have a live lease (a runner alive somewhere)."""
    if not swap_ids:
        return set()
    with sync_client() as client:
        values = client.mget([lease_key(swap_id) for swap_id in swap_ids])
    return {swap_id for swap_id, value in zip(swap_ids, values, strict=True) if value}


def handed_over_to(runner: str) -> str:
    """The lease's value while it waits for `runner` (a job id) to take it."""
    return f"handed over to {runner}"


class Lease:
    """A held lease: renewed while its runner works, released (or handed over) at the end."""

    def __init__(self, client: AsyncRedis, swap_id: int, ttl_ms: int) -> None:
        self.swap_id = swap_id
        self._client, self._key, self._me = client, lease_key(swap_id), holder_name()
        self._ttl_ms = ttl_ms
        self._renewer: asyncio.Task | None = None
        self._renewing = False

    async def take(self, *, takes_over: str | None) -> None:
        handed = handed_over_to(takes_over) if takes_over else ""
        try:
            if not await self._client.eval(TAKE, 1, self._key, self._me, handed, self._ttl_ms):
                holder = _text(await self._client.get(self._key))
                raise LeaseHeld(LEASE_HELD.format(swap_id=self.swap_id, holder=holder))
        except REDIS_DOWN as exc:
            raise FleetUnavailable(UNREACHABLE.format(error=exc)) from exc
        self._renewing = True
        self._renewer = asyncio.create_task(self._renew())

    async def hand_over(self, runner: str) -> None:
        """Pass the lease to `runner`, which takes it with `hold(..., takes_over=runner)`.

        Until it does, the lease lives its full TTL: a runner that never comes lets it
        lapse, and the sweep takes over. If Redis cannot be told, the lease stays ours
        and is released at the end of `hold` as usual: the runner then takes it afresh.
        """
        await self._stop_renewing()
        try:
            handed = await self._client.eval(
                HAND_OVER, 1, self._key, self._me, handed_over_to(runner), self._ttl_ms
            )
        except REDIS_DOWN as exc:
            log.warning("could not hand lease %s over to %s: %s", self._key, runner, exc)
            return
        if not handed:
            log.error("lease %s was lost before it could be handed over", self._key)

    async def release(self) -> None:
        await self._stop_renewing()
        with contextlib.suppress(*REDIS_DOWN):
            await self._client.eval(RELEASE, 1, self._key, self._me)

    async def _renew(self) -> None:
        while self._renewing:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                if not await self._client.eval(RENEW, 1, self._key, self._me, self._ttl_ms):
                    log.error("lease %s was lost while its operation ran", self._key)
                    return
            except REDIS_DOWN as exc:
                # The operation itself will fail on the same outage; keep trying meanwhile.
                log.warning("could not renew lease %s: %s", self._key, exc)

    async def _stop_renewing(self) -> None:
        """Stop the renewing task and wait for it, but never hang on it: a cancel that
        lands inside a Redis call can be swallowed by the client, so the loop also stops
        on its flag, after at most the call it is in (bounded by the socket timeout)."""
        renewer, self._renewer, self._renewing = self._renewer, None, False
        if renewer is not None:
            renewer.cancel()
            await asyncio.wait([renewer], timeout=SOCKET_TIMEOUT + 1)


@contextlib.asynccontextmanager
async def hold(
    swap_id: int, *, ttl: float | None = None, takes_over: str | None = None
) -> AsyncIterator[Lease]:
    """Hold the swap's lease for the block, renewing it; raise LeaseHeld if taken.

    `takes_over` names this runner (its job id) when the lease may have been handed to it.
    """
    ttl = settings.HOTSWAP_LEASE_TTL if ttl is None else ttl
    client = AsyncRedis.from_url(
        settings.REDIS_URL, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
    )
    lease = Lease(client, swap_id, max(int(ttl * 1000), 1))
    try:
        await lease.take(takes_over=takes_over)
        try:
            yield lease
        finally:
            await lease.release()  # a no-op once handed over: the lease is no longer ours
    finally:
        await client.aclose()


def _text(value: bytes | str | None) -> str:
    if value is None:
        return "another runner"
    return value.decode() if isinstance(value, bytes) else value
