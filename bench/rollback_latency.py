"""How instant an instant rollback is: from the API call to every replica serving the target.

Starts a small fleet on this machine (two replicas, daphne serving the control plane,
one RQ worker, a SQLite database of its own, the Redis in REDIS_URL under a namespace
of its own), then times, with a bearer token over HTTP:

- rollbacks: `POST /api/models/iris/rollbacks` until every replica answers an unpinned
  V2 request with the target version (polled). The target is warm (it served within
  the keep-warm window). The request itself flips the route; only the drain is a job,
  and the next rollback waits until that drain completed.
- baseline, in the same run: swaps between the same two warm versions through the
  queue (`POST /api/models/iris/swaps`: the RQ worker forks a horse that loads,
  checks and flips), timed the same way. That is what a rollback would cost if it
  waited behind the queue and a worker's fork.

Prints p50/p95/p99 of both. Target: rollback p99 under 100 ms.

    python scripts/with_redis.py -- .venv/bin/python bench/rollback_latency.py [--rollbacks 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's code, whatever the virtualenv points at

from bench.support.control_plane import drop_keys, seed_iris, set_up  # noqa: E402

IRIS_ROW = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
REPLICAS = 2
TARGET_P99_MS = 100.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: gave up after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


class Fleet:
    """The processes of a one-machine deployment, started and stopped together."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.processes: list[subprocess.Popen] = []
        self.replica_urls: list[str] = []
        self.web_url = ""

    def spawn(self, name: str, args: list[str], **extra: str) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**self.env, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so stopping it takes its children (RQ horses) too
        )
        self.processes.append(process)
        return process

    def start(self) -> None:
        for index in range(REPLICAS):
            port = free_port()
            self.spawn(
                f"replica-{index}",
                [sys.executable, "-m", "swaps.replica", "--port", str(port)],
                HOTSWAP_REPLICA_ID=f"bench-replica-{index}",
            )
            self.replica_urls.append(f"http://127.0.0.1:{port}")
        port = free_port()
        self.spawn(
            "web",
            [
                *(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)),
                "hotswap_site.asgi:application",
            ],
        )
        self.web_url = f"http://127.0.0.1:{port}"
        self.spawn(
            "worker", [sys.executable, "manage.py", "rqworker", self.env["HOTSWAP_RQ_QUEUE"]]
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted(self.workdir.glob("*.log"))
        )


def serving(client: httpx.Client, url: str) -> str | None:
    try:
        response = client.post(f"{url}/v2/models/iris/infer", json={"inputs": [IRIS_ROW]})
    except httpx.TransportError:
        return None
    return response.json().get("model_version") if response.status_code == 200 else None


def timed(client: httpx.Client, fleet: Fleet, path: str, body: dict, target: str):
    """(seconds until every replica answers with `target`, seconds until the API answered).

    Both from the moment the request is sent. The replicas are polled from another
    thread while the request is in flight: a rollback's route flips inside the request,
    before the API has finished recording it.
    """
    served_at: dict[str, float] = {}

    def poll() -> None:
        with httpx.Client(timeout=60) as poller:
            while len(served_at) < len(fleet.replica_urls):
                for url in fleet.replica_urls:
                    if url not in served_at and serving(poller, url) == target:
                        served_at[url] = time.perf_counter()

    poller = threading.Thread(target=poll)
    started = time.perf_counter()
    poller.start()
    response = client.post(f"{fleet.web_url}{path}", json=body)
    answered = time.perf_counter()
    if response.status_code != 202:
        raise SystemExit(f"bench: {path} answered {response.status_code}: {response.text}")
    poller.join(timeout=120)
    return max(served_at.values()) - started, answered - started


def settled(client: httpx.Client, fleet: Fleet) -> None:
    """Wait until the model has no operation running (a drain job finished)."""

    def idle() -> bool:
        document = client.get(f"{fleet.web_url}/api/models/iris").json()
        if document["running"] is None:
            return True
        return False

    wait_for(idle, timeout=120, what="the previous operation to finish")


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles([s * 1000 for s in samples], n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollbacks", type=int, default=40)
    parser.add_argument("--swaps", type=int, default=10)
    args = parser.parse_args()
    stack = set_up("hotswap-bench-")
    if stack is None:
        return 2
    redis_url, workdir, namespace, env = stack.redis_url, stack.workdir, stack.namespace, stack.env
    secret = seed_iris(workdir)

    fleet = Fleet(workdir, env)
    try:
        fleet.start()
        headers = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(headers=headers, timeout=60) as client:
            wait_for(
                lambda: all(serving(client, url) == "1" for url in fleet.replica_urls),
                timeout=120,
                what="every replica to serve iris 1",
            )
            wait_for(
                lambda: client.get(f"{fleet.web_url}/api/models").status_code == 200,
                timeout=60,
                what="the web process",
            )
            active = "1"
            swaps, swap_answers = [], []
            for _ in range(args.swaps):
                target = "2" if active == "1" else "1"
                body = {"from_version": active, "to_version": target}
                served, answered = timed(client, fleet, "/api/models/iris/swaps", body, target)
                swaps.append(served)
                swap_answers.append(answered)
                settled(client, fleet)
                active = target
            rollbacks, rollback_answers = [], []
            for _ in range(args.rollbacks):
                target = "2" if active == "1" else "1"
                body = {"target_version": target, "reason": "bench"}
                served, answered = timed(client, fleet, "/api/models/iris/rollbacks", body, target)
                rollbacks.append(served)
                rollback_answers.append(answered)
                settled(client, fleet)
                active = target
    except BaseException:
        print(fleet.logs(), file=sys.stderr)
        raise
    finally:
        fleet.stop()
        drop_keys(redis_url, namespace)
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        ("rollback: every replica serving", rollbacks),
        ("rollback: API answered", rollback_answers),
        ("baseline, swap job: every replica", swaps),
        ("baseline, swap job: API answered", swap_answers),
    ]
    print(f"From the API call, iris 1 <-> 2 (warm), {REPLICAS} replicas, one RQ worker, daphne")
    print(f"{'':<36}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for label, samples in rows:
        figures = "".join(f"{value:>10.1f}" for value in percentiles(samples))
        print(f"{label:<36}{len(samples):>4}{figures}")
    p99 = percentiles(rollbacks)[2]
    verdict = "met" if p99 < TARGET_P99_MS else "MISSED"
    print(f"target: rollback p99 < {TARGET_P99_MS:g} ms to every replica serving: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
