"""Our replica against MLServer 1.7.1, side by side: same machine, same models, same load.

MLServer runs at its best settings: `parallel_workers: 0` (inference on its event loop,
no worker processes), uvloop (pinned below 0.22: MLServer 1.7.1's workers fail on newer
ones) and httptools (the same version as ours), `debug: false` (no access log: ours has
none), `gzip_enabled: false` (ours does not compress). Prometheus metrics are on in both,
as both ship (`--metrics off` turns them off in both). Our replica runs as the product
does (`python -m swaps.replica`: uvicorn, httptools, gRPC beside it on the same loop).
MLServer lives in a venv of its own, made on first use with this interpreter
(`--mlserver-venv`, default peer-venvs/mlserver beside the repository) and the same
scikit-learn, numpy, joblib and httptools as ours, so both load the same joblib files.
Every target is measured in turns, `--rounds` times (the order reversed every other
round), and the median run of each is printed with its p50/p99, the CPU its server
process used (in cores) and the load average at the start and end of each section:

  rest      iris version 1 (one 1x4 FP32 row per request), wrk at concurrency 32 (the
            same body and script as bench/serving.py); and bench/servers/bare_iris.py
            under uvicorn, the practical limit (`--no-limits`: without it);
  grpc      the same over V2 gRPC: bench/support/grpc_load.py (grpc.aio, our generated
            stubs, typed `fp32_contents`, or `--grpc-contents raw`) in `--grpc-clients`
            processes of their own, 32 callers in all, their CPU too; and
            bench/servers/bare_iris_grpc.py, a bare grpc.aio server, the limit;
  batching  bench/batching.py's random forest (200 trees), one row per request at
            concurrency 64: each server unbatched, and batched (ours: max_batch_size /
            max_batch_delay_ms; MLServer's adaptive batching: max_batch_size /
            max_batch_time), at the same size and delay.

Targets (REST, and gRPC alike): ours at least 2.0x MLServer's requests per second at no
worse p99. On a 2-core machine shared with the load generator, absolute figures move
20 % between runs; the ratios taken in the same run are what count.

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/peers.py \\
        [--sections rest grpc batching] [--seconds 8] [--rounds 3] \\
        [--mlserver-venv PATH] [--grpc-clients 1] [--metrics on|off] \\
        [--replica-env HOTSWAP_INFERENCE_THREADS=0]

(`scripts/with_redis.py -- ...` starts a private Redis when there is none.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the process helpers live in tests/

from bench.batching import TREES, forest_specs, pinned_ready  # noqa: E402
from bench.serving import (  # noqa: E402
    INFER,
    WRK_SCRIPT,
    Load,
    median_run,
    percentile,
    replica_ready,
    run_wrk,
    start_bare,
)
from swaps.demo_models import build_demo_models  # noqa: E402
from tests.processes import (  # noqa: E402
    Process,
    ReplicaProcess,
    deploy,
    drop_namespace,
    free_port,
    spawn_replica,
    wait_answering,
    wait_until,
)

MLSERVER = "1.7.1"
# As ours: a joblib file is a pickle, loaded by the same scikit-learn, numpy and joblib;
# and the same HTTP parser.
SHARED_PACKAGES = ("scikit-learn", "numpy", "joblib", "httptools")
TARGET_RATIO = 2.0
# Long enough for every client process to import grpc and warm its channel first.
GRPC_CLIENT_LEAD_SECONDS = 3.0
OURS, THEIRS = "hotswap replica", f"MLServer {MLSERVER}"
BARE_REST, BARE_GRPC = "bare ASGI app (uvicorn)", "bare grpc.aio server"


@dataclass
class Run(Load):
    server_cores: float = 0.0  # the server process's CPU over the run
    client_cores: float | None = None  # the gRPC clients' (wrk's is not measured)


@dataclass
class Target:
    label: str
    measure: Callable[[], Run]


def peer_pins() -> list[str]:
    pins = [f"mlserver=={MLSERVER}", f"mlserver-sklearn=={MLSERVER}", "uvloop<0.22"]
    return pins + [f"{name}=={installed_version(name)}" for name in SHARED_PACKAGES]


def mlserver_venv(path: Path) -> Path:
    """The peer venv at `path`, made (or brought to `peer_pins()`) if it is not already.

    Made by this interpreter, so MLServer runs on the same Python as ours."""
    pins = peer_pins()
    marker = path / "hotswap-peer-pins.txt"
    wanted = "\n".join(pins) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return path
    print(f"making MLServer's venv in {path}: {' '.join(pins)}", flush=True)
    if not (path / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run(
        [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", *pins], check=True
    )
    marker.write_text(wanted)
    return path


def peer_versions(venv: Path) -> str:
    script = (
        "from importlib.metadata import version as v; "
        "print(', '.join(f'{n} {v(n)}' for n in "
        "('mlserver', 'mlserver-sklearn', 'scikit-learn', 'uvloop', 'httptools', 'grpcio')))"
    )
    finished = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True
    )
    return finished.stdout.strip()


@dataclass
class MLServerProcess(Process):
    http_port: int = 0
    grpc_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def start_mlserver(
    venv: Path, repository: Path, models: list[dict], *, metrics: bool
) -> MLServerProcess:
    """Write MLServer's settings.json and each model's model-settings.json into
    `repository`, start `mlserver start` on free ports and wait until it is ready."""
    ports: set[int] = set()
    while len(ports) < 3:  # free_port may hand out the same port twice
        ports.add(free_port())
    http_port, grpc_port, metrics_port = ports
    settings = {
        "debug": False,
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "metrics_endpoint": "/metrics" if metrics else None,
        "gzip_enabled": False,
    }
    repository.mkdir(parents=True, exist_ok=True)
    (repository / "settings.json").write_text(json.dumps(settings, indent=2))
    for model in models:
        folder = repository / f"{model['name']}-{model['parameters']['version']}"
        folder.mkdir()
        (folder / "model-settings.json").write_text(json.dumps(model, indent=2))
    log_path = repository / "mlserver.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [str(venv / "bin" / "mlserver"), "start", str(repository)],
            cwd=repository,  # its metrics folder (.metrics) goes here
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = MLServerProcess(
        popen=popen, log_path=log_path, http_port=http_port, grpc_port=grpc_port
    )
    # Ready once every model of the repository has loaded.
    wait_answering(server, f"{server.url}/v2/health/ready", name="MLServer", timeout=120)
    return server


def sklearn_model(name: str, version: str, artifact: str, **batching: float) -> dict:
    return {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": artifact, "version": version},
        **batching,
    }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = process_cpu_seconds(pid)
        self.started = time.monotonic()

    def cores(self) -> float:
        return (process_cpu_seconds(self.pid) - self.cpu) / (time.monotonic() - self.started)


def wrk_target(label: str, url: str, pid: int, *, concurrency: int, args, script: Path) -> Target:
    def measure() -> Run:
        meter = CpuMeter(pid)
        load = run_wrk(label, url, concurrency=concurrency, seconds=args.seconds, script=script)
        return Run(**vars(load), server_cores=meter.cores())

    return Target(label, measure)


def grpc_target(label: str, address: str, pid: int, *, model: str, version: str, args) -> Target:
    def measure() -> Run:
        start_at = time.time() + GRPC_CLIENT_LEAD_SECONDS
        shares = [
            args.concurrency // args.grpc_clients + (i < args.concurrency % args.grpc_clients)
            for i in range(args.grpc_clients)
        ]
        command = [
            sys.executable, "-m", "bench.support.grpc_load", "--target", address,
            "--model", model, "--version", version, "--seconds", f"{args.seconds:g}",
            "--contents", args.grpc_contents, "--start-at", repr(start_at),
        ]  # fmt: skip
        clients = [
            subprocess.Popen(
                [*command, "--concurrency", str(share)],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE,
                text=True,
            )
            for share in shares
        ]
        time.sleep(max(0.0, start_at - time.time()))
        meter = CpuMeter(pid)
        outputs = [client.communicate()[0] for client in clients]
        server_cores = meter.cores()
        if any(client.returncode for client in clients):
            raise RuntimeError(f"a gRPC load client failed against {label}")
        results = [json.loads(output) for output in outputs]
        latencies = [ms for result in results for ms in result["latencies_ms"]]
        failed = sum(result["failed"] for result in results)
        if failed:
            codes = sorted({code for result in results for code in result["failure_codes"]})
            print(f"{label}: {failed} failed calls ({', '.join(codes)})", file=sys.stderr)
        return Run(
            label=label,
            requests_per_second=sum(len(r["latencies_ms"]) / r["seconds"] for r in results),
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            requests=len(latencies) + failed,
            failed=failed,
            server_cores=server_cores,
            client_cores=sum(r["cpu_seconds"] / r["seconds"] for r in results),
        )

    return Target(label, measure)


def measure_in_turns(targets: list[Target], rounds: int) -> dict[str, list[Run]]:
    """Every target once a round; every other round in reverse order, so that neither
    always runs right after the other's load."""
    runs: dict[str, list[Run]] = {target.label: [] for target in targets}
    for turn in range(rounds):
        for target in targets if turn % 2 == 0 else reversed(targets):
            runs[target.label].append(target.measure())
    return runs


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_section(title: str, targets: list[Target], rounds: int) -> dict[str, list[Run]]:
    """Measure `targets` in turns and print their median runs; return every run by label."""
    print(f"\n== {title}", flush=True)
    print(f"load average at start: {load_average()}", flush=True)
    runs = measure_in_turns(targets, rounds)
    print(f"load average at end:   {load_average()}")
    clients = any(run.client_cores is not None for run in runs[targets[0].label])
    width = max(len(label) for label in runs)
    print(
        f"{'':{width}} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'server':>7}"
        f"{' client' if clients else ''}  runs (req/s @ p99 ms)"
    )
    for label, measured in runs.items():
        median = median_run(measured)
        spread = ", ".join(f"{run.requests_per_second:.0f} @ {run.p99_ms:.0f}" for run in measured)
        client = f" {median.client_cores:6.2f}" if median.client_cores is not None else ""
        print(
            f"{label:{width}} {median.requests_per_second:8.0f} {median.p50_ms:8.2f}"
            f" {median.p99_ms:8.2f} {median.failed:7d} {median.server_cores:7.2f}{client}"
            f"  {spread}"
        )
    print("(server, client: CPU cores the process(es) used during the median run)")
    return runs


def compare(ours_runs: list[Run], theirs_runs: list[Run], *, target: float | None = None) -> str:
    """The ratio of the median runs, and round by round: the two runs of a round were
    taken one right after the other, so each pair shares the machine's moment."""
    ours, theirs = median_run(ours_runs), median_run(theirs_runs)
    ratio = ours.requests_per_second / theirs.requests_per_second
    paired = ", ".join(
        f"{a.requests_per_second / b.requests_per_second:.2f}"
        for a, b in zip(ours_runs, theirs_runs, strict=True)
    )
    line = (
        f"{ours.label} / {theirs.label}: {ratio:.2f}x the requests per second "
        f"(round by round {paired}), p99 {ours.p99_ms:.2f} vs {theirs.p99_ms:.2f} ms"
    )
    if target is not None:
        met = ratio >= target and ours.p99_ms <= theirs.p99_ms
        line += f": {'PASS' if met else 'MISS'} (target >= {target:.1f}x at no worse p99)"
    return line


@dataclass
class Servers:
    ours: ReplicaProcess
    our_grpc: str  # host:port
    theirs: MLServerProcess
    # The practical limits (bench/servers/): a bare app with the model, nothing else.
    bare_rest: tuple[Process, str] | None = None  # and its URL
    bare_grpc: tuple[Process, str] | None = None  # and its host:port


def start_bare_grpc(artifact: str, log_dir: Path) -> tuple[Process, str]:
    port = free_port()
    log_path = log_dir / "bare-grpc.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "servers" / "bare_iris_grpc.py"),
                "--port",
                str(port),
            ],
            env={**os.environ, "BENCH_IRIS_ARTIFACT": artifact},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    process = Process(popen=popen, log_path=log_path)

    def listening() -> bool:
        if not process.alive():
            raise RuntimeError(f"the bare gRPC server exited:\n{process.log()}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout=30, what="the bare gRPC server")
    return process, f"127.0.0.1:{port}"


def print_ratios(runs: dict[str, list[Run]], bare: str | None) -> None:
    ours_runs, theirs_runs, *_ = runs.values()
    print(compare(ours_runs, theirs_runs, target=TARGET_RATIO))
    if bare is not None:
        ours, theirs = median_run(ours_runs), median_run(theirs_runs)
        limit = median_run(runs[bare]).requests_per_second
        print(
            f"of the {bare}'s requests per second: {ours.label} "
            f"{ours.requests_per_second / limit:.0%}, {theirs.label} "
            f"{theirs.requests_per_second / limit:.0%}"
        )


def rest_section(servers: Servers, args, script: Path) -> None:
    measured = [
        (f"{OURS} (uvicorn)", servers.ours.url, servers.ours.pid),
        (THEIRS, servers.theirs.url, servers.theirs.pid),
    ]
    if servers.bare_rest is not None:
        process, url = servers.bare_rest
        measured.append((BARE_REST, url, process.pid))
    targets = [
        wrk_target(label, url + INFER, pid, concurrency=args.concurrency, args=args, script=script)
        for label, url, pid in measured
    ]
    runs = run_section(
        f"REST: iris, one 1x4 FP32 row per request; wrk at concurrency {args.concurrency}, "
        f"{args.seconds:g} s runs, median of {args.rounds} in turns",
        targets,
        args.rounds,
    )
    print_ratios(runs, BARE_REST if servers.bare_rest is not None else None)


def grpc_section(servers: Servers, args) -> None:
    measured = [
        (f"{OURS} (gRPC)", servers.our_grpc, servers.ours.pid),
        (f"{THEIRS} (gRPC)", f"127.0.0.1:{servers.theirs.grpc_port}", servers.theirs.pid),
    ]
    if servers.bare_grpc is not None:
        process, address = servers.bare_grpc
        measured.append((BARE_GRPC, address, process.pid))
    targets = [
        grpc_target(label, address, pid, model="iris", version="", args=args)
        for label, address, pid in measured
    ]
    runs = run_section(
        f"gRPC: iris, ModelInfer with one 1x4 FP32 row ({args.grpc_contents} contents); "
        f"{args.concurrency} grpc.aio callers in {args.grpc_clients} client process(es), "
        f"{args.seconds:g} s runs, median of {args.rounds} in turns",
        targets,
        args.rounds,
    )
    print_ratios(runs, BARE_GRPC if servers.bare_grpc is not None else None)


def batching_section(servers: Servers, args, script: Path) -> None:
    batched = f"batched ({args.max_batch_size} rows, {args.max_delay_ms:g} ms)"
    labels = {
        (OURS, "1"): f"{OURS}, unbatched",
        (OURS, "2"): f"{OURS}, {batched}",
        (THEIRS, "1"): f"{THEIRS}, unbatched",
        (THEIRS, "2"): f"{THEIRS}, adaptive {batched}",
    }
    by_name = {OURS: servers.ours, THEIRS: servers.theirs}
    targets = [
        wrk_target(
            label,
            f"{by_name[name].url}/v2/models/forest/versions/{version}/infer",
            by_name[name].pid,
            concurrency=args.batch_concurrency,
            args=args,
            script=script,
        )
        for (name, version), label in labels.items()
    ]
    runs = run_section(
        f"batching: random forest ({TREES} trees), one 1x4 FP32 row per request; wrk at "
        f"concurrency {args.batch_concurrency}, {args.seconds:g} s runs, "
        f"median of {args.rounds} in turns",
        targets,
        args.rounds,
    )
    ours_1, ours_2, theirs_1, theirs_2 = (runs[label] for label in labels.values())
    print(compare(ours_2, ours_1))
    print(compare(theirs_2, theirs_1))
    print(compare(ours_1, theirs_1))
    print(compare(ours_2, theirs_2))


def bench(args: argparse.Namespace) -> None:
    venv = mlserver_venv(Path(args.mlserver_venv).resolve())
    print(f"peer: {peer_versions(venv)}")
    print(
        f"ours: scikit-learn {installed_version('scikit-learn')}, metrics {args.metrics}"
        + "".join(f", {name}={value}" for name, value in args.replica_env)
    )
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    script = work / "infer.lua"
    script.write_text(WRK_SCRIPT)
    iris = build_demo_models(work / "models")[0]
    forests = forest_specs(work, max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms)
    our_grpc_port = free_port()
    processes: list[Process] = []
    try:
        ours = spawn_replica(
            namespace=namespace,
            redis_url=redis_url,
            log_dir=work,
            heartbeat_interval=0.5,  # the replicas' own defaults (settings.py)
            heartbeat_ttl=3.0,
            env={"HOTSWAP_METRICS": args.metrics, **dict(args.replica_env)},
            args=("--grpc-port", str(our_grpc_port)),
        )
        processes.append(ours)
        ours.wait_live()
        deploy(
            redis_url,
            namespace,
            [iris, *forests],
            routes={"iris": "1", "forest": "1"},
            warm=(("forest", "2"),),
        )
        theirs = start_mlserver(
            venv,
            work / "mlserver",
            [
                sklearn_model("iris", "1", iris.artifact),
                sklearn_model("forest", "1", forests[0].artifact),
                sklearn_model(
                    "forest",
                    "2",
                    forests[1].artifact,
                    max_batch_size=args.max_batch_size,
                    max_batch_time=args.max_delay_ms / 1000,  # seconds
                ),
            ],
            metrics=args.metrics == "on",
        )
        processes.append(theirs)
        wait_until(lambda: replica_ready(ours.url), timeout=60, what="iris on our replica")
        for version in ("1", "2"):
            wait_until(lambda v=version: pinned_ready(ours.url, v), timeout=60, what="the forest")
        servers = Servers(ours=ours, our_grpc=f"127.0.0.1:{our_grpc_port}", theirs=theirs)
        if args.limits and "rest" in args.sections:
            servers.bare_rest = start_bare("uvicorn", iris.artifact, work)
            processes.append(servers.bare_rest[0])
        if args.limits and "grpc" in args.sections:
            servers.bare_grpc = start_bare_grpc(iris.artifact, work)
            processes.append(servers.bare_grpc[0])
        if "rest" in args.sections:
            rest_section(servers, args, script)
        if "grpc" in args.sections:
            grpc_section(servers, args)
        if "batching" in args.sections:
            batching_section(servers, args, script)
    finally:
        for process in processes:
            process.stop()
        drop_namespace(redis_url, namespace)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/peers.py needs wrk: apt-get install -y wrk")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sections", nargs="+", choices=["rest", "grpc", "batching"],
        default=["rest", "grpc", "batching"],
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=8, help="per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target, in turns")
    parser.add_argument("--concurrency", type=int, default=32, help="REST and gRPC")
    parser.add_argument("--batch-concurrency", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--grpc-clients", type=int, default=1, help="gRPC client processes")
    parser.add_argument("--grpc-contents", choices=["typed", "raw"], default="typed")
    parser.add_argument(
        "--limits",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the bare apps (bench/servers/), the practical limits, in REST and gRPC",
    )
    parser.add_argument(
        "--replica-env",
        type=lambda text: tuple(text.split("=", 1)),
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for our replica (e.g. HOTSWAP_INFERENCE_THREADS=0)",
    )
    parser.add_argument("--metrics", choices=["on", "off"], default="on", help="in both")
    parser.add_argument(
        "--mlserver-venv",
        default=str(ROOT.parent / "peer-venvs" / "mlserver"),
        help="MLServer's venv, made here on first use",
    )
    bench(parser.parse_args())


if __name__ == "__main__":
    main()
