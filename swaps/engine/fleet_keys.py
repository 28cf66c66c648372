"""Where the fleet keeps its shared state in Redis, and what a lost Redis looks like.

Entries that say what to run or serve (specs, desired, quarantine, routes), the
replicas' reports and the status board are sealed with the fleet key (`seal.py`): a
reader ignores one whose seal does not match (the board's claim, a Lua script, reads
past the seal, and its caller checks it).

Both sides use this layout: the engine's fleet ports (`fleet.py`) and every replica
(`swaps/replica.py`). Every key lives under `"{namespace}:"`, so several fleets (and
tests) share one Redis without touching each other's keys.

| key | type | holds |
|---|---|---|
| `incarnation` | string | a token per publication of the state; gone = Redis lost it |
| `specs` | hash | `[model, version]` (JSON) -> `VersionSpec` JSON |
| `routes` / `epochs` | hash | model -> active version / model -> route epoch |
| `route-seals` | hash | model -> the seal of its route at its epoch (`seal.py`) |
| `history:{model}` | list | versions that served the model, oldest first |
| `desired` | hash | `[model, version]` -> `{"request": n, "retire_at": t or null}` |
| `load-requests` | counter | the `request` numbers of `desired` |
| `quarantine` | hash | `[model, version]` -> `{"reason", "replica", "at"}`: loaded by no replica |
| `replicas` | set | replica ids that registered (a member may have expired) |
| `report:{id}` | string, TTL | the replica's latest `ReplicaReport`; its expiry is death |
| `status:{model}` | string | the model's `SwapStatus` JSON |
| `changes` | channel | a message whenever routes, specs or the desired set change |
| `reported` | channel | a message whenever a replica wrote its report |
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import FleetUnavailable

NO_LIVE_REPLICA = "no live replica: start one (python -m swaps.replica) and try again"
UNREACHABLE = "the fleet's Redis cannot be reached ({error}); nothing was changed by this step"
# What a Redis that went away raises through redis-py (OSError: a socket failing below it).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

Key = tuple[str, str]


class FleetKeys:
    def __init__(self, namespace: str) -> None:
        if not namespace:
            raise ValueError("a fleet needs a non-empty namespace")
        self.namespace = namespace
        prefix = f"{namespace}:"
        self.incarnation = prefix + "incarnation"
        self.specs = prefix + "specs"
        self.routes = prefix + "routes"
        self.epochs = prefix + "epochs"
        self.route_seals = prefix + "route-seals"
        self.desired = prefix + "desired"
        self.load_requests = prefix + "load-requests"
        self.quarantine = prefix + "quarantine"
        self.replicas = prefix + "replicas"
        self.changes = prefix + "changes"
        self.reported = prefix + "reported"
        self._prefix = prefix

    def history(self, model_id: str) -> str:
        return f"{self._prefix}history:{model_id}"

    def report(self, replica_id: str) -> str:
        return f"{self._prefix}report:{replica_id}"

    def status(self, model_id: str) -> str:
        return f"{self._prefix}status:{model_id}"


def text(value: bytes | str) -> str:
    """A Redis reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def version_field(model_id: str, version: str) -> bytes:
    """A hash field naming one version; JSON so that no separator can collide."""
    return orjson.dumps([model_id, version])


def parse_version_field(field: bytes | str) -> Key:
    model_id, version = orjson.loads(field)
    return model_id, version


def redis_client(url: str, *, timeout: float = 5.0) -> Redis:
    """A client that gives up on a silent Redis after `timeout` seconds.

    A connection Redis closed (it restarted) is retried twice at once on a new one;
    a Redis that does not answer is not retried, so callers learn within `timeout`.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        retry_on_error=[RedisConnectionError],
    )


P = ParamSpec("P")
R = TypeVar("R")


def unavailable_as_error(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn Redis going away inside a port method into `FleetUnavailable`."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except REDIS_DOWN as exc:
            raise FleetUnavailable(UNREACHABLE.format(error=exc or type(exc).__name__)) from exc

    return guarded
