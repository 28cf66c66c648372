"""Runner leases: who is running a swap's operation right now, as a key that expires.

Whoever drives an operation through the engine (a swap job, the request that flips a
rollback, the job that drains it, a recovery job) holds the swap's lease and renews it
while it works. A lease that lapses means its runner died, on any host: that is what
the recovery sweep looks for. Taking a lease is exclusive (SET NX), so two runners never
drive one operation.
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


def sync_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def leased_swaps(swap_ids: list[int]) -> set[int]:
    """Which of these swaps have a live lease (a runner alive somewhere)."""
    if not swap_ids:
        return set()
    with sync_client() as client:
        values = client.mget([lease_key(swap_id) for swap_id in swap_ids])
    return {swap_id for swap_id, value in zip(swap_ids, values, strict=True) if value}


@contextlib.asynccontextmanager
async def hold(swap_id: int, *, ttl: float | None = None) -> AsyncIterator[None]:
    """Hold the swap's lease for the block, renewing it; raise LeaseHeld if taken."""
    ttl = settings.HOTSWAP_LEASE_TTL if ttl is None else ttl
    key, me, ttl_ms = lease_key(swap_id), holder_name(), max(int(ttl * 1000), 1)
    client = AsyncRedis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        try:
            if not await client.set(key, me, nx=True, px=ttl_ms):
                holder = await client.get(key)
                raise LeaseHeld(LEASE_HELD.format(swap_id=swap_id, holder=_text(holder)))
        except REDIS_DOWN as exc:
            raise FleetUnavailable(UNREACHABLE.format(error=exc)) from exc
        renewer = asyncio.create_task(_renew(client, key, me, ttl_ms))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(*REDIS_DOWN):
                await client.eval(RELEASE, 1, key, me)
    finally:
        await client.aclose()


async def _renew(client: AsyncRedis, key: str, me: str, ttl_ms: int) -> None:
    while True:
        await asyncio.sleep(ttl_ms / 3000)
        try:
            if not await client.eval(RENEW, 1, key, me, ttl_ms):
                log.error("lease %s was lost while its operation ran", key)
                return
        except REDIS_DOWN as exc:
            # The operation itself will fail on the same outage; keep trying meanwhile.
            log.warning("could not renew lease %s: %s", key, exc)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return "another runner"
    return value.decode() if isinstance(value, bytes) else value
