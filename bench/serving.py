"""Serving throughput and latency: our replica against the practical limit, and under swaps.

Drives load with wrk (`apt-get install -y wrk`) at a fixed concurrency, every request a
V2 inference of iris (one 1x4 FP32 row), and prints requests/s and p50/p99 for:

  a. one replica (`python -m swaps.replica`), under uvicorn+httptools and under daphne;
     with the model on the event loop (HOTSWAP_INFERENCE_THREADS=0) as well, and with
     its Prometheus metrics off (HOTSWAP_METRICS=off: what measuring costs);
     every target is measured in turns, `--rounds` times, and its median run printed;
     with `--before PATH`, a replica run from another source tree too (another commit,
     `git archive <commit> | tar -x -C PATH`): a change's cost, in the same run;
     with `--variant "LABEL:NAME=VALUE,..."` (repeatable), a replica with those
     environment variables too (`--variant "blas 1:OPENBLAS_NUM_THREADS=1,OMP_NUM_THREADS=1"`);
  b. a bare ASGI app serving the same model (bench/servers/bare_iris.py) under the same server,
     in the same run: the practical limit, and the baseline of every ratio;
  c. two replicas while the engine runs swap-and-rollback cycles (1 -> 2 -> 1), with
     the failed requests counted (non-2xx answers and socket errors);
  d. how long each rollback took to reach every replica (call to every replica's ack),
     p50/p99.

Targets: (a, uvicorn) at least 90 % of (b, uvicorn), and at least 97 % of (a, uvicorn,
metrics off); zero failed requests in (c).

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/serving.py \\
        [--seconds 5] [--rounds 3] [--concurrency 32] [--cycles 20]

(`make bench` starts a private Redis when REDIS_URL is unset.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the process helpers live in tests/

import orjson  # noqa: E402

from swaps.demo_models import build_demo_models  # noqa: E402
from swaps.engine.fleet import Fleet  # noqa: E402
from swaps.engine.hotswapper import SwapPolicy  # noqa: E402
from tests.processes import (  # noqa: E402
    Process,
    drop_namespace,
    fleet_seal,
    free_port,
    spawn_replica,
    start_replicas,
    wait_until,
)

BODY = orjson.dumps(
    {
        "inputs": [
            {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
)
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{BODY.decode()}'
wrk.headers["Content-Type"] = "application/json"
"""
INFER = "/v2/models/iris/infer"


@dataclass
class Load:
    label: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int
    # The server process's CPU time (all its threads) per request answered: what the
    # server costs, far steadier than req/s on a shared machine.
    cpu_us: float | None = None


def wrk_command(url: str, *, concurrency: int, seconds: float, script: Path) -> list[str]:
    threads = min(2, concurrency)
    return [
        "wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds:g}s", "--latency",
        "-s", str(script), url,
    ]  # fmt: skip


def parse_wrk(label: str, output: str) -> Load:
    def number(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, output)
        if match is None:
            if default is None:
                raise RuntimeError(f"wrk printed no {pattern!r}:\n{output}")
            return default
        return match.group(1)

    def millis(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    failed = int(number(r"Non-2xx or 3xx responses: (\d+)", "0"))
    if socket_errors:
        failed += sum(int(n) for n in socket_errors.groups())
    return Load(
        label=label,
        requests_per_second=float(number(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=millis(number(r"\s50%\s+([\d.]+(?:us|ms|s))")),
        p99_ms=millis(number(r"\s99%\s+([\d.]+(?:us|ms|s))")),
        requests=int(number(r"(\d+) requests in")),
        failed=failed,
    )


def run_wrk(
    label: str, url: str, *, concurrency: int, seconds: float, script: Path, pid: int | None = None
) -> Load:
    command = wrk_command(url, concurrency=concurrency, seconds=seconds, script=script)
    cpu_before = cpu_seconds(pid) if pid else 0.0
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    load = parse_wrk(label, finished.stdout)
    if pid and load.requests:
        load.cpu_us = (cpu_seconds(pid) - cpu_before) * 1e6 / load.requests
    return load


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_bare(server: str, artifact: str, log_dir: Path) -> tuple[Process, str]:
    port = free_port()
    if server == "uvicorn":
        command = [
            sys.executable, "-m", "uvicorn", "bench.servers.bare_iris:app", "--http", "httptools",
            "--port", str(port), "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    else:
        command = [sys.executable, "-m", "daphne", "-p", str(port), "bench.servers.bare_iris:app"]
    log_path = log_dir / f"bare-{server}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "BENCH_IRIS_ARTIFACT": artifact, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(url), timeout=30, what=f"the bare app under {server}")
    return Process(popen=popen, log_path=log_path), url


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.post(f"{url}{INFER}", content=BODY, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def replica_ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/v2/models/iris/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


async def swap_cycles(fleet: Fleet, cycles: int) -> tuple[list[float], int]:
    """Run swap 1 -> 2 and rollback 2 -> 1 `cycles` times; rollback reach times, failures."""
    swapper = fleet.swapper(policy=SwapPolicy(drain_timeout=30, keep_warm=300))
    reach, failed = [], 0
    for _ in range(cycles):
        swapped = await swapper.swap_version("iris", "1", "2")
        rolled_back = await swapper.rollback_version("iris", "1")
        for result in (swapped, rolled_back):
            if not result.success:
                failed += 1
                print(f"FAILED: {result.message}", file=sys.stderr)
        if not rolled_back.success:
            break  # the route is not where the next cycle starts
        reach.append(rolled_back.flip_seconds * 1000)
    return reach, failed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def bench(args: argparse.Namespace) -> None:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    log_dir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    specs = build_demo_models(log_dir / "models")
    fleet = Fleet.from_url(redis_url, namespace=namespace, seal=fleet_seal())
    script = log_dir / "infer.lua"
    script.write_text(WRK_SCRIPT)
    processes: list[Process] = []
    try:
        for spec in specs:
            await fleet.publish_spec(spec)
        # The replicas' own defaults (settings.py): heartbeat every 0.5 s, gone after 3 s.
        options = {
            "namespace": namespace,
            "redis_url": redis_url,
            "log_dir": log_dir,
            "heartbeat_interval": 0.5,
            "heartbeat_ttl": 3.0,
        }
        replicas = start_replicas(2, **options)
        processes += replicas
        await fleet.swapper().deploy("iris", "1")
        targets = {}  # label -> URL, measured in turns so that all see the same machine
        extra = []
        for server in args.servers:
            bare, bare_url = start_bare(server, specs[0].artifact, log_dir)
            processes.append(bare)
            targets[f"bare ASGI app, {server}"] = bare_url, bare.pid
            if server == "uvicorn":
                targets["replica, uvicorn"] = replicas[0].url, replicas[0].pid
                inline = spawn_replica(**options, env={"HOTSWAP_INFERENCE_THREADS": "0"})
                extra.append(inline.wait_live())
                targets["replica, uvicorn, model on the event loop"] = inline.url, inline.pid
                unmeasured = spawn_replica(**options, env={"HOTSWAP_METRICS": "off"})
                extra.append(unmeasured.wait_live())
                targets["replica, uvicorn, metrics off"] = unmeasured.url, unmeasured.pid
                for label, env in args.variant:
                    variant = spawn_replica(**options, env=env)
                    extra.append(variant.wait_live())
                    targets[f"replica, uvicorn, {label}"] = variant.url, variant.pid
                if args.before:
                    before = spawn_replica(**options, root=Path(args.before).resolve())
                    extra.append(before.wait_live())
                    targets["replica, uvicorn, before"] = before.url, before.pid
            else:
                other = spawn_replica(**options, args=("--server", server)).wait_live()
                extra.append(other)
                targets[f"replica, {server}"] = other.url, other.pid
        processes += extra
        for replica in extra:
            wait_until(lambda r=replica: replica_ready(r.url), timeout=60, what="iris loaded")
        measured = {label: [] for label in targets}
        for _ in range(args.rounds):
            for label, (url, pid) in targets.items():
                measured[label].append(
                    run_wrk(
                        label,
                        url + INFER,
                        concurrency=args.concurrency,
                        seconds=args.seconds,
                        script=script,
                        pid=pid,
                    )
                )
        results = [median_run(runs) for runs in measured.values()]
        for process in processes[len(replicas) :]:
            process.stop()
        for replica in extra:
            await _until_gone(fleet, replica.replica_id)

        under_swaps, reach, swap_failures = await _during_swaps(fleet, replicas, args, script)
        results += under_swaps
    finally:
        for process in processes:
            process.stop()
        await fleet.redis.aclose()
        drop_namespace(redis_url, namespace)
    report(results, reach, swap_failures, args)
    shutil.rmtree(log_dir, ignore_errors=True)


def median_run(runs: list[Load]) -> Load:
    """The run with the median throughput (its own latencies with it)."""
    return sorted(runs, key=lambda r: r.requests_per_second)[len(runs) // 2]


async def _until_gone(fleet: Fleet, replica_id: str) -> None:
    async with asyncio.timeout(30):
        while replica_id in {r.replica_id for r in await fleet.replicas()}:
            await asyncio.sleep(0.05)


async def _during_swaps(fleet, replicas, args, script) -> tuple[list[Load], list[float], int]:
    """wrk on both replicas (half the concurrency each) for as long as the cycles run."""
    each = max(1, args.concurrency // len(replicas))
    generators = [
        subprocess.Popen(
            wrk_command(r.url + INFER, concurrency=each, seconds=600, script=script),
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in replicas
    ]
    try:
        reach, failures = await swap_cycles(fleet, args.cycles)
    finally:
        for generator in generators:
            generator.send_signal(signal.SIGINT)  # wrk stops and prints what it measured
    loads = [
        parse_wrk(f"{r.replica_id} during {args.cycles} swap+rollback cycles", g.communicate()[0])
        for r, g in zip(replicas, generators, strict=True)
    ]
    return loads, reach, failures


def report(results: list[Load], reach: list[float], swap_failures: int, args) -> None:
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    baselines = {r.label.split(", ")[1]: r for r in results if r.label.startswith("bare")}
    baseline = baselines.get("uvicorn") or next(iter(baselines.values()))
    print(f"iris, one 1x4 FP32 V2 request per call; wrk at concurrency {args.concurrency}")
    print(
        f"{'':52} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'vs bare':>8}"
        f" {'CPU us/req':>11} {'vs bare':>8}"
    )
    for r in results:
        server = next((s for s in baselines if s in r.label), None)
        # Under swaps half the requests go to version 2 (ONNX, ~10x cheaper than the
        # scikit-learn version 1), so a ratio against the bare iris 1 app means nothing.
        base = baselines.get(server, baseline)
        ratio = (
            "-" if "swap" in r.label else f"{r.requests_per_second / base.requests_per_second:.0%}"
        )
        cpu = cpu_ratio = "-"
        if r.cpu_us is not None and base.cpu_us:
            cpu, cpu_ratio = f"{r.cpu_us:.0f}", f"{r.cpu_us / base.cpu_us:.0%}"
        print(
            f"{r.label:52} {r.requests_per_second:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f}"
            f" {r.failed:7d} {ratio:>8} {cpu:>11} {cpu_ratio:>8}"
        )
    swapping = [r for r in results if "swap" in r.label]
    total = sum(r.requests_per_second for r in swapping)
    print(
        f"two replicas during swaps: {total:.0f} req/s together, "
        f"{sum(r.requests for r in swapping)} requests, "
        f"{sum(r.failed for r in swapping)} failed; {swap_failures} failed swaps or rollbacks"
    )
    print(
        f"rollback reaching every replica ({len(reach)} rollbacks): "
        f"p50 {statistics.median(reach):.1f} ms, p99 {percentile(reach, 0.99):.1f} ms"
    )
    ours = next(r for r in results if r.label == "replica, uvicorn")
    target = ours.requests_per_second / baselines["uvicorn"].requests_per_second
    print(f"target: replica >= 90% of the bare app under uvicorn: {target:.0%}")
    before = next((r for r in results if r.label == "replica, uvicorn, before"), None)
    if before is not None:
        print(
            f"replica against the one from {args.before}: "
            f"{ours.requests_per_second / before.requests_per_second:.1%} of its req/s, "
            f"p99 {ours.p99_ms:.2f} vs {before.p99_ms:.2f} ms"
        )
    unmeasured = next((r for r in results if r.label == "replica, uvicorn, metrics off"), None)
    if unmeasured is not None:
        kept = ours.requests_per_second / unmeasured.requests_per_second
        print(f"target: replica with metrics >= 97% of the one without: {kept:.1%}")


def variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, assignments = text.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if "=" in item)
    if not label or not env:
        raise argparse.ArgumentTypeError(f"{text!r} is not LABEL:NAME=VALUE[,NAME=VALUE...]")
    return label, env


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/serving.py needs wrk: apt-get install -y wrk")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5, help="per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target, in turns")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--servers", nargs="+", default=["uvicorn", "daphne"])
    parser.add_argument("--before", help="also a replica from this source tree (uvicorn)")
    parser.add_argument(
        "--variant",
        type=variant,
        action="append",
        default=[],
        metavar="LABEL:NAME=VALUE,...",
        help="also a replica with these environment variables (repeatable)",
    )
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
