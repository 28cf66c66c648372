"""Real processes for tests: replicas (`python -m swaps.replica`) and a private Redis.

Every wait here waits for a condition with a deadline; none sleeps to make a test pass.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import redis

from swaps.engine.seal import Seal

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


# A benchmark that runs no control plane of its own seals with this.
UNCONFIGURED_FLEET_KEY = "hotswap-bench-fleet-key-not-a-secret-0123456789"


def fleet_key() -> str:
    """The key every fleet process a test starts seals Redis entries with: the one the
    in-process control plane holds (settings.HOTSWAP_FLEET_KEYS)."""
    from django.conf import settings

    if settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"):
        return settings.HOTSWAP_FLEET_KEYS[0]
    return os.environ.get("HOTSWAP_FLEET_KEY") or UNCONFIGURED_FLEET_KEY


def fleet_seal() -> Seal:
    return Seal([fleet_key()])


def deploy(
    redis_url: str,
    namespace: str,
    specs,
    *,
    routes: dict[str, str],
    warm: tuple[tuple[str, str], ...] = (),
) -> None:
    """What the control plane does for a test's fleet, with the fleet key: publish the
    `specs`, route each model of `routes` to its version, load the `warm` versions."""
    from swaps.engine.fleet import Fleet

    async def publish() -> None:
        fleet = Fleet.from_url(redis_url, namespace=namespace, seal=fleet_seal())
        try:
            for spec in specs:
                await fleet.publish_spec(spec)
            swapper = fleet.swapper()
            for model_id, version in routes.items():
                await swapper.deploy(model_id, version)
            for model_id, version in warm:
                await fleet.versions.load(model_id, version)
        finally:
            await fleet.redis.aclose()

    asyncio.run(publish())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], T], *, timeout: float, what: str) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Process:
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye, no deregistration: the heartbeat just stops."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_answering(process: Process, url: str, *, name: str, timeout: float = 60.0) -> None:
    """Wait until `url` answers 200; fail with the log if `process` exits, and kill it
    if it never answers (a test that gives up leaves nothing holding a port)."""

    def answers() -> bool:
        if not process.alive():
            raise RuntimeError(f"{name} exited:\n{process.log()}")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, timeout=timeout, what=f"{name} to answer")
    except BaseException:
        process.kill()
        raise


@dataclass
class ReplicaProcess(Process):
    port: int = 0
    replica_id: str = ""
    namespace: str = ""
    redis_url: str = ""
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def is_live(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def wait_live(self, timeout: float = 30.0) -> ReplicaProcess:
        def live() -> bool:
            if not self.alive():
                raise RuntimeError(f"replica {self.replica_id} exited:\n{self.log()}")
            return self.is_live()

        wait_until(live, timeout=timeout, what=f"replica {self.replica_id} to answer")
        return self


def start_replicas(count: int, **options) -> list[ReplicaProcess]:
    """Start `count` replicas side by side and wait until every one answers."""
    replicas = [spawn_replica(**options) for _ in range(count)]
    try:
        return [replica.wait_live() for replica in replicas]
    except BaseException:
        for replica in replicas:
            replica.kill()
        raise


def start_replica(**options) -> ReplicaProcess:
    """Start `python -m swaps.replica` on a free port and wait until it answers."""
    return start_replicas(1, **options)[0]


def spawn_replica(
    *,
    namespace: str,
    redis_url: str,
    log_dir: Path,
    port: int | None = None,
    replica_id: str | None = None,
    heartbeat_interval: float = 0.2,
    heartbeat_ttl: float = 2.5,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    root: Path = ROOT,
) -> ReplicaProcess:
    """Start `python -m swaps.replica` on a free port; `wait_live()` before using it.

    `root`: the source tree it runs from (a bench compares another commit's)."""
    port = port or free_port()
    replica_id = replica_id or f"replica-{port}"
    environment = {
        **os.environ,
        "PYTHONPATH": str(root),
        "REDIS_URL": redis_url,
        "HOTSWAP_NAMESPACE": namespace,
        "HOTSWAP_REPLICA_ID": replica_id,
        "HOTSWAP_HEARTBEAT_INTERVAL": str(heartbeat_interval),
        "HOTSWAP_HEARTBEAT_TTL": str(heartbeat_ttl),
        # The gated models (tests/fleet_models.py) reach the test's Redis, in trials too.
        "HOTSWAP_TRIAL_ENVIRONMENT": "REDIS_URL,HOTSWAP_NAMESPACE",
        "HOTSWAP_FLEET_KEY": fleet_key(),
        **(env or {}),
    }
    log_path = log_dir / f"{replica_id}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "swaps.replica", "--port", str(port), *args],
            env=environment,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ReplicaProcess(
        popen=popen,
        log_path=log_path,
        port=port,
        replica_id=replica_id,
        namespace=namespace,
        redis_url=redis_url,
    )


@dataclass
class RedisProcess(Process):
    port: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(log_dir: Path, *, port: int | None = None) -> RedisProcess:
    """A private, empty redis-server (no persistence), for tests that take Redis away."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    port = port or free_port()
    log_path = log_dir / f"redis-{port}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    redis = RedisProcess(popen=popen, log_path=log_path, port=port)

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(answers, timeout=10, what=f"redis-server on port {port}")
    return redis


def drop_namespace(redis_url: str, namespace: str) -> None:
    """Delete every key under `namespace:` (never the whole database: it is shared)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.exceptions.ConnectionError:
        pass  # the test took that Redis away; nothing of ours is left in it
    finally:
        client.close()
