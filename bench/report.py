"""The swap report: steady load on two replicas through swaps and rollbacks, as plots.

    make report        # or: .venv/bin/python bench/report.py [--seconds 60]

Starts a private redis-server and two replicas (`python -m swaps.replica`) serving the
demo iris model, keeps `--concurrency` clients sending unpinned V2 requests to them
for `--seconds`, and at fixed moments swaps iris 1 -> 2 and rolls back 2 -> 1 through
the engine. Every request's start, latency and answering version (or its failure) is
recorded. It writes bench/report/README.md with the figures, and two PNGs:

  throughput_latency.png   requests/s, p50 and p99 latency per second
  version_share.png        which version answered, share of each second's requests

with every swap and rollback marked where it started.

Needs `redis-server` on PATH and matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the process helpers live in tests/

import httpx  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from swaps.demo_models import build_demo_models  # noqa: E402
from swaps.engine.fleet import Fleet  # noqa: E402
from swaps.engine.hotswapper import SwapPolicy  # noqa: E402
from tests.processes import ReplicaProcess, fleet_seal, start_redis, start_replicas  # noqa: E402

OUT = ROOT / "bench" / "report"
BODY = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                    "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip
VERSION_COLOURS = {"1": "tab:blue", "2": "tab:orange", "failed": "tab:red"}
# (fraction of the run, operation, target): swap to 2, roll back to 1, twice.
SCENARIO = [
    (0.15, "swap", "2"),
    (0.40, "rollback", "1"),
    (0.60, "swap", "2"),
    (0.80, "rollback", "1"),
]


@dataclass(frozen=True)
class Answer:
    started: float  # seconds since the load began
    latency_ms: float
    version: str  # "failed" for a non-200 answer or a transport error


@dataclass(frozen=True)
class Event:
    at: float  # seconds since the load began, when the operation was called
    operation: str
    target: str
    seconds: float  # until the engine returned (a swap includes its drain)
    success: bool
    message: str


async def load(
    replicas: list[ReplicaProcess], *, concurrency: int, stop: asyncio.Event, t0: float
) -> list[Answer]:
    answers: list[Answer] = []
    targets = itertools.cycle(r.url for r in replicas)

    async def client(session: httpx.AsyncClient, url: str) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = await session.post(f"{url}/v2/models/iris/infer", json=BODY)
                version = (
                    response.json()["model_version"] if response.status_code == 200 else "failed"
                )
            except httpx.HTTPError:
                version = "failed"
            done = time.perf_counter()
            answers.append(Answer(started - t0, (done - started) * 1000, version))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as session:
        await asyncio.gather(*(client(session, next(targets)) for _ in range(concurrency)))
    return answers


async def operations(fleet: Fleet, *, seconds: float, t0: float) -> list[Event]:
    swapper = fleet.swapper(policy=SwapPolicy(drain_timeout=30, keep_warm=600))
    events = []
    for fraction, operation, target in SCENARIO:
        await asyncio.sleep(max(0.0, t0 + fraction * seconds - time.perf_counter()))
        at = time.perf_counter()
        if operation == "swap":
            result = await swapper.swap_version("iris", "1", target)
        else:
            result = await swapper.rollback_version("iris", target)
        events.append(
            Event(
                at=at - t0,
                operation=operation,
                target=target,
                seconds=time.perf_counter() - at,
                success=result.success,
                message=result.message,
            )
        )
    return events


async def run(args: argparse.Namespace) -> tuple[list[Answer], list[Event]]:
    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    server = start_redis(work)
    fleet = Fleet.from_url(
        server.url, namespace=f"report-{uuid.uuid4().hex[:6]}", seal=fleet_seal()
    )
    replicas: list[ReplicaProcess] = []
    try:
        for spec in build_demo_models(work / "models")[:2]:
            await fleet.publish_spec(spec)
        replicas = start_replicas(
            2,
            namespace=fleet.namespace,
            redis_url=server.url,
            log_dir=work,
            heartbeat_interval=0.5,
            heartbeat_ttl=3.0,
        )
        await fleet.swapper().deploy("iris", "1")
        await fleet.versions.load("iris", "2")
        stop = asyncio.Event()
        t0 = time.perf_counter()
        loading = asyncio.create_task(
            load(replicas, concurrency=args.concurrency, stop=stop, t0=t0)
        )
        events = await operations(fleet, seconds=args.seconds, t0=t0)
        await asyncio.sleep(max(0.0, t0 + args.seconds - time.perf_counter()))
        stop.set()
        return await loading, events
    finally:
        for replica in replicas:
            replica.stop()
        await fleet.redis.aclose()
        server.stop()


def per_second(answers: list[Answer], seconds: float) -> dict[str, list]:
    buckets: dict[int, list[Answer]] = defaultdict(list)
    for answer in answers:
        buckets[int(answer.started)].append(answer)
    series: dict[str, list] = defaultdict(list)
    for second in range(int(seconds)):
        bucket = buckets.get(second, [])
        latencies = sorted(a.latency_ms for a in bucket) or [float("nan")]
        versions = Counter(a.version for a in bucket)
        series["t"].append(second)
        series["rps"].append(len(bucket))
        series["p50"].append(percentile(latencies, 0.50))
        series["p99"].append(percentile(latencies, 0.99))
        for version in VERSION_COLOURS:
            series[version].append(versions[version] / len(bucket) if bucket else 0.0)
    return series


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def mark(axis, events: list[Event]) -> None:
    for event in events:
        colour = "tab:green" if event.operation == "swap" else "tab:red"
        axis.axvline(event.at, color=colour, linestyle="--", linewidth=1)
        axis.annotate(
            f"{event.operation} → {event.target}",
            xy=(event.at, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color=colour,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1},
        )


def plot(series: dict[str, list], events: list[Event]) -> None:
    # Each second's figures are drawn at its middle; the version shares as steps over it.
    middles = [t + 0.5 for t in series["t"]]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.plot(middles, series["rps"], color="black", linewidth=1.2)
    top.set_ylabel("requests/s")
    top.set_ylim(bottom=0)
    top.set_title("iris on two replicas: throughput and latency per second")
    bottom.plot(middles, series["p50"], label="p50", linewidth=1.2)
    bottom.plot(middles, series["p99"], label="p99", linewidth=1.2)
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper right")
    for axis in (top, bottom):
        mark(axis, events)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(OUT / "throughput_latency.png", dpi=80)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(10, 3.5))
    labels = [v for v in VERSION_COLOURS if any(series[v])]
    edges = [*series["t"], len(series["t"])]
    axis.stackplot(
        edges,
        *([*series[v], series[v][-1]] for v in labels),
        labels=[f"version {v}" if v != "failed" else "failed" for v in labels],
        colors=[VERSION_COLOURS[v] for v in labels],
        step="post",
    )
    axis.set_ylim(0, 1)
    axis.set_ylabel("share of requests")
    axis.set_xlabel("seconds")
    axis.set_title("which version answered")
    axis.legend(loc="lower left", fontsize=8)
    mark(axis, events)
    figure.tight_layout()
    figure.savefig(OUT / "version_share.png", dpi=80)
    plt.close(figure)


def write_readme(answers: list[Answer], events: list[Event], args: argparse.Namespace) -> str:
    failed = sum(a.version == "failed" for a in answers)
    latencies = sorted(a.latency_ms for a in answers)
    served = Counter(a.version for a in answers)
    lines = [
        "# Swap report",
        "",
        "Regenerate with `make report` (about "
        f"{args.seconds + 30:.0f} s; it overwrites this file and the two PNGs).",
        "",
        f"Two replicas (`python -m swaps.replica`, uvicorn) serve the demo iris model; "
        f"{args.concurrency} async clients (httpx, in the same process) send unpinned V2 "
        f"requests (one 1x4 FP32 row) round-robin to them for {args.seconds:g} s, while "
        "the engine swaps iris 1 → 2 and rolls back 2 → 1 twice. Version 1 is a "
        "scikit-learn LogisticRegression, version 2 an ONNX random forest.",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"Python {platform.python_version()}. The load generator shares the machine's "
        "cores with the replicas, so throughput is the client's as much as the servers'.",
        "",
        "| | |",
        "|---|---|",
        f"| requests | {len(answers):,} |",
        f"| failed (non-200 or transport error) | {failed} |",
        f"| answered by version 1 / 2 | {served['1']:,} / {served['2']:,} |",
        f"| mean throughput | {len(answers) / args.seconds:,.0f} requests/s |",
        f"| latency p50 / p99 / max | {percentile(latencies, 0.5):.1f} / "
        f"{percentile(latencies, 0.99):.1f} / {latencies[-1]:.1f} ms |",
        "",
        "| at | operation | took | result |",
        "|---|---|---|---|",
        *(
            f"| {e.at:.1f} s | {e.operation} → {e.target} | {e.seconds * 1000:.0f} ms | "
            f"{'ok' if e.success else 'FAILED'}: {e.message} |"
            for e in events
        ),
        "",
        "Both times run from the engine call to its result: the target's health check "
        "on every replica, the flip acknowledged by every replica, and the drain of the "
        "version left (every request already on it finishing). Lines mark each call.",
        "",
        "![throughput and latency](throughput_latency.png)",
        "",
        "![version share](version_share.png)",
        "",
    ]
    text = "\n".join(lines)
    (OUT / "README.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    answers, events = asyncio.run(run(args))
    plot(per_second(answers, args.seconds), events)
    print(write_readme(answers, events, args))
    if any(a.version == "failed" for a in answers) or not all(e.success for e in events):
        raise SystemExit("some requests or operations failed: see bench/report/README.md")


if __name__ == "__main__":
    main()
