"""A serving replica: the engine's local objects, kept in step with the fleet in Redis.

The inference path (`swaps.gateway`) reads only this process's route table and counts
requests in flight locally. In the background one task keeps the replica in step:

- every heartbeat it reads the fleet's state (specs, routes, the desired set) and writes
  its report (`ReplicaReport`) with a time to live: its heartbeat;
- on a change notification it does the same at once, so applying a new route and
  acknowledging its epoch (the report) takes one round trip, not a heartbeat;
- it loads what the desired set asks for (on a worker thread, after a trial load in a
  child process: `engine/sandbox.py`), health-checks it and reports the result; it
  unloads what is marked to retire once nothing runs on it;
- a version whose trial crashed, hung or broke its memory limit it quarantines for the
  whole fleet (`quarantine` in Redis): no replica tries it again until it is cleared;
- while a version it no longer routes to still has requests in flight, it reports every
  ~50 ms, so a drain is seen to finish promptly.

If Redis is unreachable the replica keeps serving its last routes and keeps retrying,
logging once per outage. If Redis comes back empty it registers again and keeps its
routes until the control plane republishes them (`Fleet.republish`).

Run one with `python -m swaps.replica --port 8001` (see `main`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio import Redis

from hotswap_site.env import (
    env_bool,
    env_fleet_keys,
    env_int,
    env_key_prefix,
    env_list,
    env_seconds,
    env_str,
)

from . import logs
from .engine import sandbox
from .engine.compatibility import Signature
from .engine.errors import SwapError
from .engine.fleet_keys import (
    REDIS_DOWN,
    FleetKeys,
    parse_version_field,
    redis_client,
    text,
    version_field,
)
from .engine.fleet_versions import QUARANTINED, Quarantine
from .engine.inflight import LocalInflight
from .engine.ports import LoadedModel
from .engine.reports import ReplicaReport, nest, sealed_report
from .engine.results import HealthCheckResult, utcnow
from .engine.router import LocalRouter, decode_route
from .engine.runtimes import describe_exception
from .engine.sandbox import ContainedLoadFailure
from .engine.seal import Seal
from .engine.serving import Dispatcher, routed_or_in_flight
from .engine.spec import VersionSpec
from .engine.versions import LocalVersions

# Named, not __name__: run as `python -m swaps.replica`, that would be "__main__".
log = logging.getLogger("swaps.replica")

Key = tuple[str, str]
# Reconnection backoff while Redis is away: quick at first, then every 2 s at most.
RETRY_FIRST, RETRY_MAX = 0.1, 2.0


@dataclass(frozen=True)
class Desired:
    request: int
    retire_at: float | None

    def retired(self, now: float) -> bool:
        return self.retire_at is not None and now >= self.retire_at


class Replica:
    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        seal: Seal,
        replica_id: str,
        address: str = "",
        heartbeat_interval: float = 0.5,
        heartbeat_ttl: float = 3.0,
        drain_report_interval: float = 0.05,
        loader: Callable[[VersionSpec], LoadedModel] | None = None,
        trial_timeout: float = 60.0,
        trial_environment: tuple[str, ...] = (),
        health_timeout: float = 10.0,
    ) -> None:
        """`loader` None: every version is tried in a child first (`sandbox.Sandbox`)."""
        if heartbeat_ttl <= heartbeat_interval:
            raise ValueError("heartbeat_ttl must be longer than heartbeat_interval")
        self.redis = redis
        self.keys = FleetKeys(namespace)
        self.seal = seal
        self.replica_id = replica_id
        self.address = address
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.drain_report_interval = drain_report_interval
        self.router = LocalRouter()
        self.inflight = LocalInflight()
        self.sandbox = (
            sandbox.Sandbox(timeout=trial_timeout, passed_environment=trial_environment)
            if loader is None
            else None
        )
        self.in_use = routed_or_in_flight(self.router, self.inflight)
        self.versions = LocalVersions(
            loader=loader or self.sandbox.load,
            health_timeout=health_timeout,
            replica=replica_id,
            in_use=self.in_use,
        )
        self.dispatcher = Dispatcher(
            router=self.router, inflight=self.inflight, versions=self.versions
        )
        self.started_at = utcnow()
        self._incarnation = ""
        self._applied_in: dict[str, str] = {}  # model -> incarnation its route came from
        self._specs: dict[bytes, bytes] = {}
        self._desired: dict[Key, Desired] = {}
        self._answered: dict[Key, int] = {}
        self._failures: dict[Key, str] = {}
        self._load_failures: dict[Key, int] = {}
        self._health: dict[Key, HealthCheckResult] = {}
        self._quarantined: dict[Key, Quarantine] = {}
        self._to_quarantine: dict[Key, Quarantine] = {}  # found here, not yet in Redis
        self._loading: dict[Key, asyncio.Task] = {}
        self._waiting_for_load: set[str] = set()  # models routed to a version not loaded yet
        self._refused_routes: set[str] = set()  # models whose route's seal did not match
        self._synced = False
        self._reported_draining = False
        self._outage = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # -- what the gateway asks ------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Synced with the fleet once, and every route it knows is applied and loaded.

        Not while Redis holds routes and none of them could be believed and none was ever
        applied: a replica given another fleet key would otherwise be ready to serve
        nothing. (One already serving keeps its routes, forged entries or not.)"""
        unverified = self._refused_routes and not self.router.routes()
        return self._synced and not self._waiting_for_load and not unverified

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._keep_in_step(), name=f"replica {self.replica_id} sync"),
            asyncio.create_task(self._listen(), name=f"replica {self.replica_id} changes"),
        ]

    async def stop(self) -> None:
        """Stop syncing and leave the fleet (best effort: Redis may be gone)."""
        busy = [*self._tasks, *self._loading.values()]
        for task in busy:
            task.cancel()
        for task in busy:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self.sandbox is not None:
            await asyncio.to_thread(self.sandbox.close)
        with contextlib.suppress(*REDIS_DOWN, TimeoutError):
            async with asyncio.timeout(1.0):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(self.keys.report(self.replica_id))
                    pipe.srem(self.keys.replicas, self.replica_id)
                    await pipe.execute()

    async def sync_now(self) -> None:
        """Read the fleet's state once, act on it, and report: one heartbeat."""
        await self._sync()
        await self._report()

    # -- the background task ----------------------------------------------------------------

    async def _keep_in_step(self) -> None:
        retry = RETRY_FIRST
        while True:
            # Cleared before the sync, not after the wait: a wake-up that arrives while
            # the sync runs (or while wait_for cancels its waiter) is never lost.
            self._wake.clear()
            try:
                await self.sync_now()
            except REDIS_DOWN as exc:
                if not self._outage:
                    log.warning(
                        "replica %s lost Redis (%s); serving its last routes, retrying",
                        self.replica_id,
                        describe_exception(exc),
                    )
                    self._outage = True
                delay, retry = retry, min(retry * 2, RETRY_MAX)
            except Exception:  # a bug or a malformed record must not stop the heartbeat
                log.exception("replica %s could not sync with the fleet", self.replica_id)
                delay = self.heartbeat_interval
            else:
                if self._outage:
                    log.warning("replica %s reached Redis again", self.replica_id)
                    self._outage = False
                retry = RETRY_FIRST
                delay = self.next_report_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _listen(self) -> None:
        """Wake the sync task on every change notification."""
        retry = RETRY_FIRST
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.keys.changes)
                    self._wake.set()  # a change may have come while not subscribed
                    retry = RETRY_FIRST
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=self.heartbeat_interval
                        )
                        if message is not None:
                            self._wake.set()
            except REDIS_DOWN:
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)

    async def _sync(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.incarnation)
            pipe.hgetall(self.keys.specs)
            pipe.hgetall(self.keys.routes)
            pipe.hgetall(self.keys.epochs)
            pipe.hgetall(self.keys.desired)
            pipe.hgetall(self.keys.quarantine)
            pipe.hgetall(self.keys.route_seals)
            incarnation, specs, routes, epochs, desired, quarantined, seals = await pipe.execute()
        # What Redis holds is only believed under the fleet key's seal (engine/seal.py).
        self._register(self.seal.open_all("spec", specs))
        self._quarantined = {
            parse_version_field(field): Quarantine.from_json(raw)
            for field, raw in self.seal.open_all("quarantine", quarantined).items()
        } | self._to_quarantine
        self._desired = {
            parse_version_field(field): Desired(**orjson.loads(raw))
            for field, raw in self.seal.open_all("desired", desired).items()
        }
        incarnation = text(incarnation) if incarnation is not None else self._incarnation
        epochs = {text(m): int(e) for m, e in epochs.items()}
        believed = {
            text(m): text(v)
            for m, v in routes.items()
            if self.seal.route_matches(text(m), text(v), epochs.get(text(m), 0), seals.get(m))
        }
        self._refused_routes = {text(m) for m in routes} - set(believed)
        self._apply_routes(believed, epochs, incarnation)
        self._incarnation = incarnation
        now = time.time()
        for key, wanted in self._desired.items():
            if not wanted.retired(now) and self._answered.get(key, -1) < wanted.request:
                self._start_loading(key, wanted.request)
        self._retire(now)
        self._synced = True

    def _register(self, specs: Mapping[bytes, bytes]) -> None:
        runtimes = set()
        for field, raw in specs.items():
            if self._specs.get(field) != raw:
                spec = VersionSpec.from_dict(orjson.loads(raw))
                self.versions.register(spec)
                self._specs[field] = raw
                runtimes.add(spec.runtime)
        if self.sandbox is not None and runtimes:
            self.sandbox.start(runtimes)  # before the first load needs it

    def _apply_routes(
        self, routes: dict[str, str], epochs: dict[str, int], incarnation: str
    ) -> None:
        """Apply every route whose version is loaded here; load the others first.

        A route published anew (a new incarnation, after Redis lost the state) replaces
        the local one whatever its epoch. A route Redis no longer has is kept.
        """
        waiting = set()
        for model_id, route in routes.items():
            version, split = decode_route(route)
            # A rollout's candidate answers (or shadows) part of the traffic: both load first.
            needed = (version,) if split is None else (version, split.candidate)
            missing = [v for v in needed if self.versions.loaded(model_id, v) is None]
            if missing:
                waiting.add(model_id)
                for absent in missing:
                    wanted = self._desired.get((model_id, absent))
                    self._start_loading((model_id, absent), wanted.request if wanted else 0)
                continue
            epoch = epochs.get(model_id, 0)
            if self._applied_in.get(model_id, incarnation) != incarnation:
                self.router.replace(model_id, version, epoch, split)
            else:
                self.router.apply(model_id, version, epoch, split)
            self._applied_in[model_id] = incarnation
        self._waiting_for_load = waiting

    def _start_loading(self, key: Key, request: int) -> None:
        if key in self._loading or self._answered.get(key, -1) >= request:
            return
        if (quarantine := self._quarantined.get(key)) is not None:
            # Answered at once, without loading: the fleet's load fails with the reason.
            reason = QUARANTINED.format(model_id=key[0], version=key[1], reason=quarantine.reason)
            self._failed_to_load(key, reason)
            self._answered[key] = request
            return
        self._loading[key] = asyncio.create_task(self._load(key, request))

    async def _load(self, key: Key, request: int) -> None:
        try:
            if self.versions.loaded(*key) is None:  # a warm version only needs its check
                await self.versions.load(*key)
        except ContainedLoadFailure as exc:
            self._failed_to_load(key, exc.message)
            log.error("replica %s quarantines it: %s", self.replica_id, exc.message)
            found = Quarantine(reason=exc.reason, replica=self.replica_id, at=time.time())
            self._to_quarantine[key] = self._quarantined[key] = found
        except SwapError as exc:
            self._failed_to_load(key, exc.message)
        except Exception as exc:  # the runtimes wrap load failures; this is a safety net
            self._failed_to_load(key, describe_exception(exc))
        else:
            self._failures.pop(key, None)
            self._health[key] = await self.versions.check_health(*key)
        finally:
            self._answered[key] = request
            self._loading.pop(key, None)
            self._wake.set()  # report (and apply a route waiting for it) at once

    def load_failures(self) -> dict[Key, int]:
        """Failed loads per version since this replica started (its /metrics)."""
        return dict(self._load_failures)

    def refused_entries(self) -> dict[str, int]:
        """Entries of the fleet's Redis ignored for their seal, by kind (its /metrics)."""
        return dict(self.seal.refused)

    def _failed_to_load(self, key: Key, reason: str) -> None:
        # Kept as the version's last check on this replica: the console shows why.
        self._failures[key] = reason
        self._load_failures[key] = self._load_failures.get(key, 0) + 1
        self._health[key] = HealthCheckResult.failure(
            model_id=key[0], version=key[1], reason=reason, replica=self.replica_id
        )

    def _retire(self, now: float) -> None:
        for key in self.versions.loaded_keys():
            wanted = self._desired.get(key)
            if wanted is None or not wanted.retired(now) or key in self._loading:
                continue
            if not self.in_use(*key):
                # Its last check stays reported (the console shows it, and that it is
                # no longer loaded); the engine reads health only where it is loaded.
                self.versions.schedule_unload(key, 0)

    def next_report_delay(self) -> float:
        """Seconds until the next report: soon while a drain is under way, else a heartbeat.

        Soon as well when the last report showed requests draining that have finished
        since (the last one may end while the report is being written): the engine is
        waiting for the report that says none is left.
        """
        if self._reported_draining or self._draining():
            return self.drain_report_interval
        return self.heartbeat_interval

    def _draining(self, pending: Mapping[Key, int] | None = None) -> bool:
        if pending is None:
            pending = self.inflight.snapshot().pending
        return any(not self.router.serves(model_id, version) for model_id, version in pending)

    async def _report(self) -> None:
        counts = self.inflight.snapshot()
        pending = counts.pending
        routes = self.router.routes()
        loaded: dict[str, list[str]] = {}
        signatures: dict[tuple[str, str], dict] = {}
        for model_id, version in self.versions.loaded_keys():
            loaded.setdefault(model_id, []).append(version)
            model = self.versions.loaded(model_id, version)
            if model is not None:  # unloaded since the keys were read
                signatures[model_id, version] = Signature(model.inputs, model.outputs).as_dict()
        report = ReplicaReport(
            replica_id=self.replica_id,
            address=self.address,
            pid=os.getpid(),
            started_at=self.started_at,
            reported_at=utcnow(),
            incarnation=self._incarnation,
            loaded=loaded,
            routes={model_id: route.version for model_id, route in routes.items()},
            epochs={model_id: route.epoch for model_id, route in routes.items()},
            splits={m: route.split.as_dict() for m, route in routes.items() if route.split},
            inflight=nest(pending),
            completed=nest(counts.completed),
            client_errors=nest(counts.client_errors),
            model_failures=nest(counts.model_failures),
            served=nest(counts.served),
            latency=nest(counts.latency),
            health=nest(self._health),
            answered=nest(self._answered),
            failures=nest(self._failures),
            signatures=nest(signatures),
        )
        self._reported_draining = self._draining(pending)
        written = dict(self._to_quarantine)
        async with self.redis.pipeline(transaction=True) as pipe:
            for (model_id, version), quarantine in written.items():
                # The first replica's reason stands; others found the same thing.
                field = version_field(model_id, version)
                pipe.hsetnx(self.keys.quarantine, field, quarantine.sealed(self.seal, field))
                pipe.publish(self.keys.changes, model_id)
            pipe.set(
                self.keys.report(self.replica_id),
                sealed_report(self.seal, self.keys, report),
                px=int(self.heartbeat_ttl * 1000),
            )
            pipe.sadd(self.keys.replicas, self.replica_id)
            pipe.publish(self.keys.reported, self.replica_id)
            await pipe.execute()
        for key in written:
            self._to_quarantine.pop(key, None)


# -- running one ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaSettings:
    """What a replica reads from its environment: the variables settings.py reads too."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "hotswap"
    replica_id: str = ""
    heartbeat_interval: float = 0.5
    heartbeat_ttl: float = 3.0
    max_body_bytes: int = 8 * 2**20
    inference_threads: int = 8  # 0: the model runs on the event loop (bench only)
    metrics: bool = True  # GET /metrics, and what it costs each request
    # Connections (and requests) uvicorn takes at once; beyond it answers 503 at once,
    # so a flood of idle or slow clients cannot exhaust the process's file descriptors.
    # gRPC takes as many RPCs at once, and answers RESOURCE_EXHAUSTED beyond.
    max_connections: int = 2048
    # The V2 gRPC endpoint's port (swaps/grpc_gateway.py); 0: REST only.
    grpc_port: int = 0
    # A version's trial load (a child process) must finish within this; keep it under
    # the control plane's HOTSWAP_LOAD_TIMEOUT, which waits for the replicas' answers.
    trial_timeout: float = 60.0
    # Variables a model's own code needs, passed to its trial (which sees no others).
    trial_environment: tuple[str, ...] = ()
    # HOTSWAP_FLEET_KEY (and a previous one while rotating): required, with no default.
    fleet_keys: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReplicaSettings:
        """Read the environment; a malformed value raises ImproperlyConfigured, naming it."""
        defaults = cls()
        return cls(
            redis_url=env_str("REDIS_URL", default=defaults.redis_url, environ=environ),
            namespace=env_key_prefix(
                "HOTSWAP_NAMESPACE", default=defaults.namespace, environ=environ
            ),
            replica_id=env_str("HOTSWAP_REPLICA_ID", default="", environ=environ),
            heartbeat_interval=env_seconds(
                "HOTSWAP_HEARTBEAT_INTERVAL", default=defaults.heartbeat_interval, environ=environ
            ),
            heartbeat_ttl=env_seconds(
                "HOTSWAP_HEARTBEAT_TTL", default=defaults.heartbeat_ttl, environ=environ
            ),
            max_body_bytes=env_int(
                "HOTSWAP_MAX_BODY_BYTES",
                default=defaults.max_body_bytes,
                minimum=1,
                environ=environ,
            ),
            inference_threads=env_int(
                "HOTSWAP_INFERENCE_THREADS",
                default=defaults.inference_threads,
                minimum=0,
                environ=environ,
            ),
            metrics=env_bool("HOTSWAP_METRICS", default=defaults.metrics, environ=environ),
            max_connections=env_int(
                "HOTSWAP_MAX_CONNECTIONS",
                default=defaults.max_connections,
                minimum=1,
                environ=environ,
            ),
            grpc_port=env_int(
                "HOTSWAP_GRPC_PORT", default=defaults.grpc_port, minimum=0, environ=environ
            ),
            trial_timeout=env_seconds(
                "HOTSWAP_TRIAL_TIMEOUT", default=defaults.trial_timeout, environ=environ
            ),
            trial_environment=tuple(
                env_list("HOTSWAP_TRIAL_ENVIRONMENT", default=[], environ=environ)
            ),
            fleet_keys=env_fleet_keys(environ=environ),
        )

    def replica(self, *, address: str = "", default_id: str = "") -> Replica:
        return Replica(
            redis_client(self.redis_url),
            namespace=self.namespace,
            seal=Seal(self.fleet_keys),
            replica_id=self.replica_id or default_id or f"{socket.gethostname()}-{os.getpid()}",
            address=address,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_ttl=self.heartbeat_ttl,
            trial_timeout=self.trial_timeout,
            trial_environment=self.trial_environment,
        )


def main(argv: list[str] | None = None) -> None:
    """Serve the V2 protocol for the fleet: uvicorn with httptools unless told otherwise,
    and gRPC beside it on `--grpc-port` (HOTSWAP_GRPC_PORT), on the same event loop.

    uvicorn serves the bare gateway several times faster than daphne on the same host
    (README, "Serving"; bench/serving.py measures both); `--server daphne` is there to
    measure that again (REST only).
    """
    from .gateway import Gateway

    parser = argparse.ArgumentParser(
        prog="python -m swaps.replica", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="serve V2 over gRPC on this port too (default: HOTSWAP_GRPC_PORT; 0: no gRPC)",
    )
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
    args = parser.parse_args(argv)
    try:
        settings = ReplicaSettings.from_env()
    except ImproperlyConfigured as exc:
        parser.exit(2, f"python -m swaps.replica: {exc}\n")
    grpc_port = settings.grpc_port if args.grpc_port is None else args.grpc_port
    if grpc_port and args.server == "daphne":
        parser.exit(2, "python -m swaps.replica: gRPC is served beside uvicorn, not daphne\n")
    replica = settings.replica(
        address=f"http://{args.host}:{args.port}",
        default_id=f"{socket.gethostname()}:{args.port}",
    )
    # LOG_FORMAT and LOG_LEVEL, as the Django processes read them; every record names
    # this replica.
    logs.configure(replica=replica.replica_id)
    grpc_gateway = None

    async def started() -> None:
        if grpc_gateway is not None:
            await grpc_gateway.start()
        # gc.freeze(): the start-up heap (modules, models) is never collected, which
        # takes the full collections out of the tail latency.
        gc.freeze()
        log.info(
            "replica %s started: V2 inference on %s (%s)%s",
            replica.replica_id,
            replica.address,
            args.server,
            f", gRPC on {grpc_gateway.address}" if grpc_gateway is not None else "",
        )

    async def stopping() -> None:
        if grpc_gateway is not None:
            await grpc_gateway.stop()

    app = Gateway(
        replica,
        max_body_bytes=settings.max_body_bytes,
        inference_threads=settings.inference_threads,
        metrics=settings.metrics,
        on_started=started,
        on_stopping=stopping,
    )
    if args.server == "daphne":
        from daphne.server import Server  # no lifespan: the gateway starts on first request

        Server(app, endpoints=[f"tcp:port={args.port}:interface={args.host}"]).run()
        return
    import uvicorn

    if grpc_port:
        from .grpc_gateway import GrpcGateway

        grpc_gateway = GrpcGateway(
            app.inference,
            host=args.host,
            port=grpc_port,
            max_message_bytes=settings.max_body_bytes,
            max_concurrent_rpcs=settings.max_connections,
        )

    class ReplicaServer(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            # gRPC drains beside REST (health NOT_SERVING, no new RPCs, the running ones
            # finish), and the lifespan's shutdown waits for both before leaving the fleet.
            if grpc_gateway is not None:
                grpc_gateway.begin_stopping()
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        http="httptools",
        loop="asyncio",
        lifespan="on",
        access_log=False,
        log_level="warning",
        # uvicorn's own records (a failed request, a failed start-up) go through the
        # handler logs.configure set, in its format; its default config would print them
        # as text on a handler of its own.
        log_config=None,
        timeout_graceful_shutdown=30,
        limit_concurrency=settings.max_connections,
        # An idle keep-alive connection is closed after this, as uvicorn's default; a
        # client that never finishes its headers is the TLS proxy's to cut off.
        timeout_keep_alive=5,
    )
    ReplicaServer(config).run()


if __name__ == "__main__":
    main()
