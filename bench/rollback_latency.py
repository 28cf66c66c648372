"""How instant an instant rollback is: from the API call to every replica serving the target.

Starts a small fleet on this machine (two replicas, daphne serving the control plane,
one RQ worker, a SQLite database of its own, the Redis in REDIS_URL under a namespace
of its own) with the console open in headless Chromium (the dashboard and the model
page, so every change is rendered and pushed as when an operator watches; `--no-console`
leaves it closed), then times, with bearer tokens over HTTP:

- rollbacks: `POST /api/models/iris/rollbacks` until every replica answers an unpinned
  V2 request with the target version (polled), and until the API answered. The target
  is warm (it served within the keep-warm window). The request itself flips the route;
  only the drain is a job, and the next rollback waits until that drain completed.
- approved rollbacks: the model then requires approval; alice requests, bob approves,
  timed the same way from bob's `POST /api/rollbacks/<id>/approve`.
- swaps between the same two warm versions through the queue
  (`POST /api/models/iris/swaps`: the RQ worker forks a horse that loads, checks and
  flips), timed the same way: what a rollback would cost if it waited behind the queue.

Prints p50/p95/p99 of each and the load average. Targets: rollback and approved
rollback p99 under 100 ms to every replica serving, the API answering within 20 ms of
that (p99); a swap p50 under 200 ms.

    python scripts/with_redis.py -- .venv/bin/python bench/rollback_latency.py [--rollbacks 40]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's code, whatever the virtualenv points at

from bench.support.control_plane import drop_keys, seed_iris, set_up  # noqa: E402
from tests.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

CONSOLE_PASSWORD = "rollback-latency-bench"
TARGET_ANSWER_MS = 20.0
POLL_PAUSE = 0.002
CONSOLE_SETTLES = 0.5
TARGET_SWAP_P50_MS = 200.0
# Runs before each console page's own scripts: notes when its websocket is open.
WS_OPEN = 'document.addEventListener("htmx:wsOpen", () => { window.__wsOpen = true; });'
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
                # A pause between rounds: a poller that never rests takes a core of this
                # 2-core machine from the processes it times. It adds up to this much to
                # each figure.
                time.sleep(POLL_PAUSE)

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
    """Wait until the model has no operation running (a drain job finished), then for
    the console to have pushed it: an operator's rollback starts from a quiet console,
    not from one still rendering the operation before (console pushes follow a change
    by at most broadcast's REST_WAIT)."""

    def idle() -> bool:
        document = client.get(f"{fleet.web_url}/api/models/iris").json()
        return document["running"] is None

    wait_for(idle, timeout=120, what="the previous operation to finish")
    time.sleep(CONSOLE_SETTLES)


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles([s * 1000 for s in samples], n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def approver_token() -> str:
    """bob, who may approve rollbacks, and his API token (after seed_iris)."""
    from django.contrib.auth.models import Permission, User

    from swaps import tokens

    bob = User.objects.create_user("bob", password=CONSOLE_PASSWORD)
    bob.user_permissions.set(Permission.objects.filter(codename="approve_rollback"))
    return tokens.create_api_token(user=bob, name="bench", via="bench")[1]


def require_approval() -> None:
    """From here on, iris's rollbacks wait for a second user's approval."""
    from swaps.models import ServedModel

    def update() -> None:
        ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)

    # On a thread of its own: Playwright's event loop runs on this one, and Django's ORM
    # refuses to run where an event loop runs.
    thread = threading.Thread(target=update)
    thread.start()
    thread.join()


@contextlib.contextmanager
def console_open(web_url: str) -> Iterator[None]:
    """The dashboard and iris's page open in headless Chromium, their websockets up."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            login = context.new_page()
            login.goto(f"{web_url}/accounts/login/")
            login.fill("input[name=username]", "bob")
            login.fill("input[name=password]", CONSOLE_PASSWORD)
            with login.expect_navigation():
                login.click("[type=submit]")
            for path in ("/", "/models/iris/"):
                page = context.new_page()
                page.add_init_script(WS_OPEN)
                page.goto(f"{web_url}{path}")
                page.wait_for_function("() => window.__wsOpen === true", timeout=30_000)
            yield
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollbacks", type=int, default=40)
    parser.add_argument("--approved", type=int, default=20)
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument(
        "--no-console", action="store_true", help="time with nobody watching the console"
    )
    args = parser.parse_args()
    stack = set_up("hotswap-bench-")
    if stack is None:
        return 2
    redis_url, workdir, namespace, env = stack.redis_url, stack.workdir, stack.namespace, stack.env
    secret = seed_iris(workdir)
    bob_secret = approver_token()

    fleet = Fleet(workdir, env)
    results: dict[str, list[float]] = {}
    try:
        fleet.start()
        alice = httpx.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=60)
        bob = httpx.Client(headers={"Authorization": f"Bearer {bob_secret}"}, timeout=60)
        with alice, bob:
            wait_for(
                lambda: all(serving(alice, url) == "1" for url in fleet.replica_urls),
                timeout=120,
                what="every replica to serve iris 1",
            )
            wait_for(
                lambda: alice.get(f"{fleet.web_url}/api/models").status_code == 200,
                timeout=60,
                what="the web process",
            )
            watching = contextlib.nullcontext() if args.no_console else console_open(fleet.web_url)
            with watching:
                results = run_all(alice, bob, fleet, args)
    except BaseException:
        print(fleet.logs(), file=sys.stderr)
        raise
    finally:
        fleet.stop()
        drop_keys(redis_url, namespace)
        shutil.rmtree(workdir, ignore_errors=True)

    watched = "nobody watching" if args.no_console else "the console open in Chromium"
    print(
        f"From the API call, iris 1 <-> 2 (warm), {REPLICAS} replicas, one RQ worker, daphne, "
        f"{watched}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"{'':<40}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for label, samples in results.items():
        figures = "".join(f"{value:>10.1f}" for value in percentiles(samples))
        print(f"{label:<40}{len(samples):>4}{figures}")
    verdicts = []
    for kind in ("rollback", "approved rollback"):
        served = percentiles(results[f"{kind}: every replica serving"])[2]
        gap = percentiles(results[f"{kind}: API answered after that"])[2]
        verdicts.append(
            f"{kind} p99 < {TARGET_P99_MS:g} ms: {'met' if served < TARGET_P99_MS else 'MISSED'}"
            f" ({served:.0f}); API within {TARGET_ANSWER_MS:g} ms: "
            f"{'met' if gap < TARGET_ANSWER_MS else 'MISSED'} ({gap:.0f})"
        )
    swap_p50 = percentiles(results["swap job: every replica serving"])[0]
    verdicts.append(
        f"swap p50 < {TARGET_SWAP_P50_MS:g} ms: "
        f"{'met' if swap_p50 < TARGET_SWAP_P50_MS else 'MISSED'} ({swap_p50:.0f})"
    )
    print("targets: " + "; ".join(verdicts))
    return 0


def run_all(alice: httpx.Client, bob: httpx.Client, fleet: Fleet, args) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}

    def record(kind: str, served: float, answered: float) -> None:
        results.setdefault(f"{kind}: every replica serving", []).append(served)
        results.setdefault(f"{kind}: API answered", []).append(answered)
        if kind != "swap job":  # a swap's API answers at once; its job flips later
            results.setdefault(f"{kind}: API answered after that", []).append(answered - served)

    active = "1"
    for _ in range(args.swaps):
        target = "2" if active == "1" else "1"
        body = {"from_version": active, "to_version": target}
        record("swap job", *timed(alice, fleet, "/api/models/iris/swaps", body, target))
        settled(alice, fleet)
        active = target
    for _ in range(args.rollbacks):
        target = "2" if active == "1" else "1"
        body = {"target_version": target, "reason": "bench"}
        record("rollback", *timed(alice, fleet, "/api/models/iris/rollbacks", body, target))
        settled(alice, fleet)
        active = target
    require_approval()
    for _ in range(args.approved):
        target = "2" if active == "1" else "1"
        body = {"target_version": target, "reason": "bench"}
        asked = alice.post(f"{fleet.web_url}/api/models/iris/rollbacks", json=body)
        if asked.status_code != 202:
            raise SystemExit(f"bench: the rollback request answered {asked.status_code}")
        approve = f"/api/rollbacks/{asked.json()['id']}/approve"
        record("approved rollback", *timed(bob, fleet, approve, {}, target))
        settled(alice, fleet)
        active = target
    return results


if __name__ == "__main__":
    raise SystemExit(main())
