"""What the fleet's coordination costs as it grows: 1, 2, 4, 8 and 16 replicas.

For each fleet size it starts that many real replica processes (`python -m swaps.replica`,
the replicas' default heartbeat of 0.5 s and TTL of 3 s) against a private redis-server,
serving only the gated test model `held` (a Python callable: no model weights to load, so
16 replicas fit on a small machine; the sync loop, reports and acks are the real ones),
and measures:

  - flip ack: `Fleet.router.flip` from the call until every live replica acknowledged
    the new epoch (its report), over `--flips` flips; plus the Redis commands one flip
    costs, and how many replica reports the engine read for it;
  - drain detect, idle: `Fleet.inflight.wait_drained` on a version nothing runs on;
  - drain detect, busy: one request in flight on the old version on every replica, the
    route flipped; from the last of those requests answering to the engine seeing 0
    in flight summed over the live replicas;
  - idle cost: Redis commands per second (INFO `total_commands_processed`) and Redis
    CPU while the fleet does nothing for `--idle` seconds.

It prints a table, the cost per replica, and whether the cost grows linearly.

    .venv/bin/python bench/scale.py [--sizes 1 2 4 8 16] [--flips 20] [--idle 10]

Needs `redis-server` on PATH (it starts its own; REDIS_URL is not used).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the process helpers live in tests/

import httpx  # noqa: E402
import redis  # noqa: E402

from swaps.engine.fleet import Fleet  # noqa: E402
from tests.fleet_models import gate_key, gated_spec  # noqa: E402
from tests.processes import (  # noqa: E402
    ReplicaProcess,
    fleet_seal,
    start_redis,
    start_replicas,
)

MODEL = "held"
HEARTBEAT_INTERVAL, HEARTBEAT_TTL = 0.5, 3.0  # the replicas' defaults (settings.py)


@dataclass
class Size:
    replicas: int
    flip_ms: list[float]
    flip_commands: float  # Redis commands per flip (engine and replicas together)
    flip_rounds: float  # times the engine read replica reports per flip (MGET calls)
    flip_kb_out: float  # kB Redis sent per flip (the fleet state, the reports read)
    idle_drain_ms: list[float]
    busy_drain_ms: list[float]
    idle_ops: float  # Redis commands per second while idle
    idle_redis_cpu: float  # Redis CPU seconds per second while idle


class RedisCounters:
    """Redis's own counters: every command the server ran, and its CPU time."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)

    def read(self) -> tuple[int, float, dict[str, int]]:
        """(commands processed, CPU seconds, calls per command incl. net_output_bytes)."""
        stats = self._client.info("stats")
        cpu = self._client.info("cpu")
        commands = {
            name.removeprefix("cmdstat_"): value["calls"]
            for name, value in self._client.info("commandstats").items()
        }
        commands["net_output_bytes"] = stats["total_net_output_bytes"]
        # Three INFO calls per read: counted by Redis, subtracted by `since`.
        return (
            stats["total_commands_processed"],
            cpu["used_cpu_sys"] + cpu["used_cpu_user"],
            commands,
        )

    def since(self, before: tuple[int, float, dict[str, int]]) -> tuple[int, float, dict]:
        total, cpu, commands = self.read()
        delta = {k: v - before[2].get(k, 0) for k, v in commands.items()}
        delta["info"] = delta.get("info", 0) - 3
        return total - before[0] - 3, cpu - before[1], delta

    def close(self) -> None:
        self._client.close()


async def measure_size(
    count: int, *, redis_url: str, log_dir: Path, args: argparse.Namespace
) -> Size:
    namespace = f"scale-{count}-{uuid.uuid4().hex[:6]}"
    fleet = Fleet.from_url(
        redis_url, namespace=namespace, seal=fleet_seal(), heartbeat_ttl=HEARTBEAT_TTL
    )
    counters = RedisCounters(redis_url)
    replicas: list[ReplicaProcess] = []
    try:
        for version in ("1", "2"):
            await fleet.publish_spec(gated_spec(model_id=MODEL, version=version))
        replicas = start_replicas(
            count,
            namespace=namespace,
            redis_url=redis_url,
            log_dir=log_dir,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            heartbeat_ttl=HEARTBEAT_TTL,
        )
        await _until(lambda: _live(fleet, count), what=f"{count} replicas reporting")
        await fleet.swapper().deploy(MODEL, "1")
        await fleet.versions.load(MODEL, "2")

        # Idle first, with nothing else happening: heartbeats and reports only.
        await asyncio.sleep(2 * HEARTBEAT_INTERVAL)
        before = counters.read()
        await asyncio.sleep(args.idle)
        idle_commands, idle_cpu, _ = counters.since(before)

        flips, before, active = [], counters.read(), "1"
        for _ in range(args.flips):
            active = "2" if active == "1" else "1"
            started = time.perf_counter()
            await fleet.router.flip(MODEL, active)
            flips.append((time.perf_counter() - started) * 1000)
        flip_commands, _, by_command = counters.since(before)

        idle_drains = []
        for _ in range(args.drains):
            left, active = active, "2" if active == "1" else "1"
            await fleet.router.flip(MODEL, active)
            started = time.perf_counter()
            remaining = await fleet.inflight.wait_drained(MODEL, left, timeout=30)
            idle_drains.append((time.perf_counter() - started) * 1000)
            assert remaining == 0, f"nothing ran on {left}, yet {remaining} in flight"

        busy_drains = []
        for _ in range(args.drains):
            lag, active = await _busy_drain(fleet, replicas, active)
            busy_drains.append(lag)
        return Size(
            replicas=count,
            flip_ms=flips,
            flip_commands=flip_commands / args.flips,
            flip_rounds=by_command.get("mget", 0) / args.flips,
            flip_kb_out=by_command["net_output_bytes"] / 1024 / args.flips,
            idle_drain_ms=idle_drains,
            busy_drain_ms=busy_drains,
            idle_ops=idle_commands / args.idle,
            idle_redis_cpu=idle_cpu / args.idle,
        )
    finally:
        for replica in replicas:
            replica.stop()
        counters.close()
        await fleet.redis.aclose()


async def _busy_drain(
    fleet: Fleet, replicas: list[ReplicaProcess], active: str
) -> tuple[float, str]:
    """One request in flight on `active` per replica; flip away; drain-seen lag (ms)."""
    answered: list[float] = []
    # Every replica's request waits on one gate, opened for all of them after the flip.
    gate = random.randrange(1, 2**24)
    body = {"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP32", "data": [gate]}]}

    async def hold(client: httpx.AsyncClient, replica: ReplicaProcess) -> None:
        response = await client.post(f"{replica.url}/v2/models/{MODEL}/infer", json=body)
        answered.append(time.perf_counter())
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == active

    async with httpx.AsyncClient(timeout=60) as client:
        holding = [asyncio.create_task(hold(client, r)) for r in replicas]
        await _until(
            lambda: _pending_is(fleet, active, len(replicas)),
            what=f"a request in flight on every replica's version {active}",
        )
        other = "2" if active == "1" else "1"
        await fleet.router.flip(MODEL, other)
        await fleet.redis.rpush(gate_key(fleet.keys.namespace, gate), *[1] * len(replicas))
        remaining = await fleet.inflight.wait_drained(MODEL, active, timeout=30)
        seen = time.perf_counter()
        await asyncio.gather(*holding)
    assert remaining == 0, f"{remaining} still in flight on {active}"
    return (seen - max(answered)) * 1000, other


async def _live(fleet: Fleet, count: int) -> bool:
    return len(await fleet.replicas()) == count


async def _pending_is(fleet: Fleet, version: str, count: int) -> bool:
    return await fleet.inflight.pending(MODEL, version) == count


async def _until(condition, *, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def p(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(sizes: list[Size], args: argparse.Namespace) -> None:
    print(
        f"fleet coordination cost; heartbeat {HEARTBEAT_INTERVAL:g} s, {args.flips} flips, "
        f"{args.drains} drains of each kind, idle {args.idle:g} s per size"
    )
    header = (
        f"{'replicas':>8} | {'flip ack p50':>12} {'p90':>7} {'max':>7} | {'cmds/flip':>9} "
        f"{'reads/flip':>10} {'kB out/flip':>11} | {'drain idle p50':>14} | "
        f"{'drain busy p50':>14} {'max':>7} | "
        f"{'idle ops/s':>10} {'per replica':>11} | {'redis cpu':>9}"
    )
    print(header)
    print("-" * len(header))
    for s in sizes:
        print(
            f"{s.replicas:>8} | {statistics.median(s.flip_ms):9.1f} ms {p(s.flip_ms, 0.9):7.1f}"
            f" {max(s.flip_ms):7.1f} | {s.flip_commands:9.0f} {s.flip_rounds:10.1f}"
            f" {s.flip_kb_out:11.1f} | "
            f"{statistics.median(s.idle_drain_ms):11.1f} ms | "
            f"{statistics.median(s.busy_drain_ms):11.1f} ms {max(s.busy_drain_ms):7.1f} | "
            f"{s.idle_ops:10.1f} {s.idle_ops / s.replicas:11.1f} | {s.idle_redis_cpu:8.2%}"
        )
    first, last = sizes[0], sizes[-1]
    growth = last.replicas / first.replicas
    ratios = {
        "idle Redis commands/s": last.idle_ops / first.idle_ops,
        "Redis commands per flip": last.flip_commands / first.flip_commands,
        "Redis bytes out per flip": last.flip_kb_out / first.flip_kb_out,
        "flip ack p50": statistics.median(last.flip_ms) / statistics.median(first.flip_ms),
    }
    print(f"\ngrowth from {first.replicas} to {last.replicas} replicas (x{growth:g}):")
    for label, ratio in ratios.items():
        verdict = "linear or better" if ratio <= growth * 1.25 else "SUPER-LINEAR"
        print(f"  {label:32} x{ratio:6.1f}  {verdict}")


async def bench(args: argparse.Namespace) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = start_redis(log_dir)
    sizes = []
    try:
        for count in args.sizes:
            sizes.append(
                await measure_size(count, redis_url=server.url, log_dir=log_dir, args=args)
            )
            print(f"measured {count} replicas", file=sys.stderr)
    finally:
        server.stop()
    report(sizes, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--drains", type=int, default=5, help="drains of each kind")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds measured idle")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
