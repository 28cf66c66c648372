"""Helpers for tests that drive the control plane against real replica and worker processes.

The test process plays the web process (API calls, rollback flips); replicas and RQ
workers run as subprocesses on the test's Redis namespace, queue and database.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import dataclass, field

import httpx
from django.utils import timezone

from swaps import fleet_state
from swaps.models import AuditEntry, ServedModel, Swap

from .control_plane import add_version
from .fleet_models import HOLD_CAP_SECONDS, Gate
from .processes import Process, ReplicaProcess, wait_until

IRIS_ROW = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}


def infer_body(model: str, *, gate: Gate | None = None) -> dict:
    """A one-row V2 request: to the gated model `held` (held until `gate` opens, if one is
    given), or an iris row for anything else."""
    if gate is not None:
        return gate.body()
    if model.startswith("held"):
        return {"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP32", "data": [0]}]}
    return {"inputs": [IRIS_ROW]}


def answer(replica: ReplicaProcess, model: str, *, gate: Gate | None = None) -> dict:
    """The replica's V2 answer for `model` as a dict, or {} if it did not answer 200."""
    response = httpx.post(
        f"{replica.url}/v2/models/{model}/infer",
        json=infer_body(model, gate=gate),
        timeout=HOLD_CAP_SECONDS + 10,
    )
    return response.json() if response.status_code == 200 else {}


def serve(name: str, specs, replicas: list[ReplicaProcess]) -> ServedModel:
    """Records for `specs` (the first active), published, and served by every replica."""
    served = ServedModel.objects.create(name=name)
    add_version(served, specs[0], first_served_at=timezone.now())
    for spec in specs[1:]:
        add_version(served, spec)
    served.active_version = served.versions.get(version=specs[0].version)
    served.save()
    fleet_state.republish_from_database()
    active = specs[0].version
    for replica in replicas:
        # That version, not any: a replica that served the model before (a browser
        # module's stage) still answers with the route it had until it syncs.
        wait_until(
            lambda replica=replica: answer(replica, name).get("model_version") == active,
            timeout=120,
            what=f"{name} {active} to be served on {replica.replica_id}",
        )
    return served


def api_swap(user, model: str, source: str, target: str) -> int:
    """Start a swap through the API as `user`, as a browser session would; its id."""
    from .control_plane import client_for, post_json

    response = post_json(
        client_for(user),
        f"/api/models/{model}/swaps",
        {"from_version": source, "to_version": target},
    )
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def reaches(swap_id: int, state: str, timeout: float = 60.0) -> None:
    wait_until(
        lambda: Swap.objects.get(pk=swap_id).state == state,
        timeout=timeout,
        what=f"swap {swap_id} to be {state}",
    )


def finished(swap_id: int, worker: Process, timeout: float = 90.0) -> Swap:
    """The swap once it is final; on a timeout, fail showing the worker's log."""

    def final() -> Swap | None:
        swap = Swap.objects.get(pk=swap_id)
        return None if swap.is_running else swap

    try:
        return wait_until(final, timeout=timeout, what=f"swap {swap_id} to finish")
    except TimeoutError:
        raise AssertionError(f"worker log:\n{worker.log()}") from None


def route(model: str) -> str | None:
    """The version the fleet (Redis) routes `model` to."""

    async def active(engine):
        return await engine.router.active(model)

    return fleet_state.run(active)


def pending(model: str, version: str) -> int:
    """Requests for `model` `version` in flight, summed over the live replicas' reports."""

    async def count(engine):
        return await engine.inflight.pending(model, version)

    return fleet_state.run(count)


def audit_trail(model: str) -> list[tuple[str, str, str]]:
    entries = AuditEntry.objects.filter(model=model).order_by("id")
    return [(e.actor, e.action, e.outcome) for e in entries]


def routing(model: str, replicas: list[ReplicaProcess]) -> dict[str, str | None]:
    """Who says which version serves `model`: the database, the fleet, each replica."""
    served = ServedModel.objects.select_related("active_version").get(name=model)
    seen: dict[str, str | None] = {
        "database": served.active_version.version if served.active_version else None,
        "fleet": route(model),
    }
    for replica in replicas:
        seen[replica.replica_id] = answer(replica, model).get("model_version")
    return seen


def agreed(model: str, replicas: list[ReplicaProcess]) -> dict[str, str | None] | None:
    """`routing` once everyone names one version (replicas apply routes asynchronously)."""
    seen = routing(model, replicas)
    return seen if len(set(seen.values())) == 1 and None not in seen.values() else None


def wait_agreed(model: str, replicas: list[ReplicaProcess], timeout: float = 60.0) -> str:
    """The version everyone agrees on; fail with who said what if they never do."""
    try:
        seen = wait_until(lambda: agreed(model, replicas), timeout=timeout, what="agreement")
    except TimeoutError:
        raise AssertionError(f"routing disagrees: {routing(model, replicas)}") from None
    return next(iter(seen.values()))


@dataclass
class Outcome:
    replica: str
    status: int | None  # None: no HTTP answer
    version: str = ""
    error: str = ""


@dataclass
class Traffic:
    """Steady V2 requests over `replicas` from a few threads, every outcome recorded.

    The pause between requests keeps the load steady without starving the processes
    under test of the machine's two cores.
    """

    replicas: list[ReplicaProcess]
    model: str = "iris"
    threads: int = 2
    pause: float = 0.02
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        targets = itertools.cycle(self.replicas)
        lock = threading.Lock()

        def next_target() -> ReplicaProcess:
            with lock:
                return next(targets)

        def loop() -> None:
            with httpx.Client(timeout=30) as client:
                while not self._stop.is_set():
                    self.outcomes.append(self._send(client, next_target()))
                    self._stop.wait(self.pause)

        self._workers = [threading.Thread(target=loop, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def _send(self, client: httpx.Client, replica: ReplicaProcess) -> Outcome:
        try:
            response = client.post(
                f"{replica.url}/v2/models/{self.model}/infer", json=infer_body(self.model)
            )
        except httpx.HTTPError as exc:
            return Outcome(replica.replica_id, None, error=type(exc).__name__)
        if response.status_code != 200:
            return Outcome(replica.replica_id, response.status_code, error=response.text[:200])
        return Outcome(replica.replica_id, 200, version=response.json()["model_version"])

    def answered(self) -> int:
        return sum(1 for o in self.outcomes if o.status == 200)

    def failures(self, *, excluding: tuple[str, ...] = ()) -> Counter:
        """Failed requests by (replica, why), leaving out replicas the test killed."""
        return Counter(
            (o.replica, o.error or str(o.status))
            for o in self.outcomes
            if o.status != 200 and o.replica not in excluding
        )

    def versions(self) -> set[str]:
        return {o.version for o in self.outcomes if o.status == 200}


class Held:
    """One request the replica holds until the test calls `release()`, sent from a thread.

    It goes to the gated model (tests/fleet_models.py) through the replica's own Redis
    and namespace, so it stays in flight exactly as long as the test needs.
    """

    def __init__(self, replica: ReplicaProcess, *, model: str = "held") -> None:
        self.replica = replica
        self.gate = Gate(replica.redis_url, replica.namespace)
        self.result: dict = {}
        self.error = ""
        self._thread = threading.Thread(target=self._send, args=(model,), daemon=True)
        self._thread.start()

    def _send(self, model: str) -> None:
        try:
            response = httpx.post(
                f"{self.replica.url}/v2/models/{model}/infer",
                json=self.gate.body(),
                timeout=HOLD_CAP_SECONDS + 10,
            )
        except Exception as exc:  # recorded: the test decides whether it may fail
            self.error = f"{type(exc).__name__}: {exc}"
            return
        if response.status_code == 200:
            self.result = response.json()
        else:
            self.error = f"{response.status_code}: {response.text[:300]}"

    def release(self) -> None:
        self.gate.release()

    def join(self, timeout: float = 90.0) -> None:
        """Wait for the request to end (release it first, or kill its replica)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the held request is still running"

    def outcome(self, timeout: float = 90.0) -> dict:
        """The answer, once the request ended; one that ended without a 200 fails the test."""
        self.join(timeout)
        assert self.result, f"the held request failed: {self.error}"
        return self.result


def settled(model: str, replicas: list[ReplicaProcess], worker: Process) -> str:
    """Invariants 2 and 3 once the fault cleared: every swap final, everyone agreeing.

    Returns the version the database, the fleet and every replica name.
    """
    for swap in Swap.objects.filter(served_model__name=model, state__in=Swap.RUNNING):
        finished(swap.pk, worker)
    assert not Swap.objects.filter(state__in=Swap.RUNNING).exists()
    return wait_agreed(model, replicas)
