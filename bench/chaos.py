"""Chaos: steady traffic over three replicas while swaps, rollbacks and kills land at random.

Starts a fleet on this machine, on loopback only: three replicas, one RQ worker, a
SQLite database of its own and the Redis in REDIS_URL under a namespace of its own.
This process plays the web process: it starts swaps and requests rollbacks through
the domain functions the API calls (a rollback flips the route here, as the API's
request would). For `--seconds` (default 180) threads send V2 requests to every
replica while, every second or two, one of these happens at random:

- a swap of iris to another version (1 sklearn, 2 onnx, or 3, which fails its health
  check on purpose);
- a rollback to the version served before;
- SIGKILL of a replica (restarted on the same port a few seconds later);
- SIGKILL of the RQ worker and the horse running its job (restarted at once).

Then the chaos stops, every process is brought back, recovery runs (the worker's
sweep), and it prints requests sent and failed (grouped by why), swaps attempted,
accepted, completed and failed, and every invariant it checked:

- no swap record is left running;
- the database, the fleet's route and every replica name the same version;
- every attempt has its audit entry, and every final operation its `finish` entry;
- no request failed except on a replica that was killed or not yet ready after restart.

    python scripts/with_redis.py -- .venv/bin/python bench/chaos.py [--seconds 180]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's code, whatever the virtualenv points at

from bench.support.control_plane import bench_environment  # noqa: E402

REPLICAS = 3
DOWN_SECONDS = (2.0, 6.0)  # how long a killed replica stays down
PAUSE_SECONDS = (1.0, 2.5)  # between two chaos actions
ACTIONS = {"swap": 6, "rollback": 4, "kill replica": 2, "kill worker": 1}


def configure(workdir: Path, namespace: str) -> None:
    """Environment for this process (Django) and, inherited, for every one it starts:
    short timeouts, so that kills are noticed and recovered within the run."""
    os.environ.update(
        bench_environment(
            workdir,
            namespace,
            HOTSWAP_DRAIN_TIMEOUT="5",
            HOTSWAP_KEEP_WARM="10",
            HOTSWAP_LEASE_TTL="1",
            HOTSWAP_HEARTBEAT_TTL="1",
            HOTSWAP_SWEEP_INTERVAL="1",
            HOTSWAP_REPUBLISH_ON_START="1",
        )
    )


class Chaos:
    """The fleet, the traffic, and what the chaos did to them."""

    def __init__(self, *, workdir: Path, rng: random.Random) -> None:
        from django.contrib.auth.models import Permission, User
        from django.core.management import call_command

        self.workdir = workdir
        self.rng = rng
        self.replicas: list = []
        self.worker = None
        self.workers_started = 0
        self.traffic = None
        self.down: dict[str, float] = {}  # replica id -> when to restart it
        self.killed: Counter = Counter()
        self.attempts: Counter = Counter()  # (kind, outcome)
        self.refusals: Counter = Counter()
        call_command("migrate", verbosity=0)
        self.alice = User.objects.create_user("alice")
        self.alice.user_permissions.set(
            Permission.objects.filter(codename__in=("start_swap", "request_rollback"))
        )
        self.alice = User.objects.get(pk=self.alice.pk)

    # -- the fleet ------------------------------------------------------------------------

    def start(self) -> None:
        from django.utils import timezone

        from swaps import fleet_state
        from swaps.demo_models import build_demo_models
        from swaps.models import ServedModel
        from tests.control_plane import add_version
        from tests.live import Traffic
        from tests.processes import start_replicas

        served = ServedModel.objects.create(name="iris")
        for spec in build_demo_models(self.workdir / "models"):
            version = add_version(served, spec)
            if spec.version == "1":
                version.first_served_at = timezone.now()
                version.save()
                served.active_version = version
        served.save()
        self.replicas = start_replicas(REPLICAS, **self._replica_options())
        fleet_state.republish_from_database()
        self.worker = self._start_worker()
        self._wait_agreed()
        self.traffic = Traffic(self.replicas, threads=3, pause=0.01).__enter__()

    def _replica_options(self) -> dict:
        from django.conf import settings

        return {
            "namespace": settings.HOTSWAP_NAMESPACE,
            "redis_url": settings.REDIS_URL,
            "log_dir": self.workdir,
        }

    def _start_worker(self):
        from tests.workers import start_worker

        # A new name each time: a SIGKILLed worker's registration outlives it for a while.
        self.workers_started += 1
        return start_worker(self.workdir, name=f"worker-{self.workers_started}")

    def stop(self) -> None:
        if self.traffic is not None:
            self.traffic.__exit__(None, None, None)
        for process in [*self.replicas, self.worker]:
            if process is not None:
                process.stop()

    # -- the chaos ------------------------------------------------------------------------

    def run(self, *, seconds: float) -> None:
        kinds, weights = zip(*ACTIONS.items(), strict=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._restart_due()
            action = self.rng.choices(kinds, weights)[0]
            getattr(self, "_" + action.replace(" ", "_"))()
            time.sleep(self.rng.uniform(*PAUSE_SECONDS))  # the pace of the chaos
        self.traffic.__exit__(None, None, None)

    def _swap(self) -> None:
        from swaps import swapping
        from swaps.models import ServedModel

        active = ServedModel.objects.get(name="iris").active_version.version
        target = self.rng.choice([v for v in "123" if v != active])
        self._attempt(
            "swap",
            lambda: swapping.start_swap(
                model="iris", from_version=active, to_version=target, user=self.alice, via="chaos"
            ),
        )

    def _rollback(self) -> None:
        from swaps import rollbacks
        from swaps.models import ModelVersion, ServedModel

        active = ServedModel.objects.get(name="iris").active_version
        served = ModelVersion.objects.filter(
            served_model__name="iris", first_served_at__isnull=False
        ).exclude(pk=active.pk)
        target = self.rng.choice([v.version for v in served] or ["1"])
        self._attempt(
            "rollback",
            lambda: rollbacks.request_rollback(
                model="iris", target_version=target, reason="chaos", user=self.alice, via="chaos"
            ),
        )

    def _attempt(self, kind: str, call) -> None:
        from swaps.refusals import Refused

        try:
            call()
        except Refused as refusal:
            self.attempts[kind, "refused"] += 1
            self.refusals[f"{refusal.status}: {_shape(refusal.message)}"] += 1
        else:
            self.attempts[kind, "accepted"] += 1

    def _kill_replica(self) -> None:
        alive = [r for r in self.replicas if r.replica_id not in self.down]
        if len(alive) < 2:  # keep one serving: the invariant is about live replicas
            return
        victim = self.rng.choice(alive)
        victim.kill()
        self.killed["replica"] += 1
        self.down[victim.replica_id] = time.monotonic() + self.rng.uniform(*DOWN_SECONDS)

    def _kill_worker(self) -> None:
        self.worker.kill_with_its_work_horse()
        self.killed["worker"] += 1
        self.worker = self._start_worker()

    def _restart_due(self, *, all_now: bool = False) -> None:
        from tests.processes import spawn_replica

        for index, replica in enumerate(self.replicas):
            due = self.down.get(replica.replica_id)
            if due is None or (time.monotonic() < due and not all_now):
                continue
            self.replicas[index] = spawn_replica(
                port=replica.port, replica_id=replica.replica_id, **self._replica_options()
            )
            del self.down[replica.replica_id]

    # -- after the chaos ------------------------------------------------------------------

    def recover(self) -> None:
        """Bring every process back and let recovery finish what the chaos left running."""
        from swaps.models import Swap
        from tests.processes import wait_until

        self._restart_due(all_now=True)
        for replica in self.replicas:
            replica.wait_live(timeout=60)
        if not self.worker.alive():
            self.worker = self._start_worker()
        wait_until(
            lambda: not Swap.objects.filter(state__in=Swap.RUNNING).exists(),
            timeout=120,
            what="every operation to finish",
        )

    def _wait_agreed(self) -> str:
        from tests.live import wait_agreed

        return wait_agreed("iris", self.replicas, timeout=120)

    def check(self) -> list[tuple[bool, str]]:
        from swaps.models import AuditEntry, Swap
        from tests.live import routing

        checks = []
        running = Swap.objects.filter(state__in=Swap.RUNNING).count()
        checks.append((running == 0, f"no swap record left running ({running} running)"))
        try:
            self._wait_agreed()
            agreed = True
        except AssertionError:
            agreed = False
        seen = routing("iris", self.replicas)
        checks.append((agreed, f"routing matches the database on every replica: {seen}"))
        accepted = sum(n for (_, outcome), n in self.attempts.items() if outcome == "accepted")
        attempts = sum(self.attempts.values())
        audited = AuditEntry.objects.filter(
            via="chaos", action__in=("start_swap", "request_rollback")
        ).count()
        checks.append((audited == attempts, f"every attempt audited ({audited} of {attempts})"))
        operations = Swap.objects.count()
        finishes = AuditEntry.objects.filter(action="finish").count()
        checks.append(
            (
                finishes == operations == accepted,
                f"every accepted operation recorded and finished in the audit log "
                f"({accepted} accepted, {operations} records, {finishes} finish entries)",
            )
        )
        unexpected = self._unexpected_failures()
        checks.append(
            (
                not unexpected,
                "no request failed on a replica that was up and ready "
                f"({sum(unexpected.values())} did: {dict(unexpected)})",
            )
        )
        self.outcomes = Counter(s.state for s in Swap.objects.all())
        self.failures = Counter(
            _shape(s.message) for s in Swap.objects.filter(state=Swap.State.FAILED)
        )
        return checks

    def _unexpected_failures(self) -> Counter:
        """Failures that are neither a refused connection to a dead replica, a request cut
        off by its replica's SIGKILL, nor a restarted replica's 503 before it was ready."""
        expected = ("ConnectError", "RemoteProtocolError", "ReadError", "not ready")
        return Counter(
            why
            for (_, why) in self.traffic.failures().elements()
            if not any(word in why for word in expected)
        )

    def report(self, checks: list[tuple[bool, str]]) -> None:
        sent = len(self.traffic.outcomes)
        failures = Counter()
        for (_, why), n in self.traffic.failures().items():
            failures[_shape(why)] += n
        print(f"requests sent: {sent}, answered: {self.traffic.answered()}")
        print(f"requests failed: {sum(failures.values())}")
        for why, n in failures.most_common():
            print(f"  {n:6d}  {why}")
        print(f"processes killed: {dict(self.killed)}")
        for kind in ("swap", "rollback"):
            accepted, refused = self.attempts[kind, "accepted"], self.attempts[kind, "refused"]
            print(
                f"{kind}s attempted: {accepted + refused}, accepted: {accepted}, refused: {refused}"
            )
        for why, n in self.refusals.most_common():
            print(f"  refused {n:4d}  {why}")
        print(
            f"operations completed: {self.outcomes.get('completed', 0)}, "
            f"failed: {self.outcomes.get('failed', 0)}"
        )
        for why, n in self.failures.most_common():
            print(f"  failed {n:4d}  {why}")
        print("invariants:")
        for ok, what in checks:
            print(f"  {'ok  ' if ok else 'FAIL'}  {what}")


def _shape(message: str) -> str:
    """A message with its numbers and ids blanked, so alike failures group together."""
    import re

    return re.sub(r"\d+", "N", message)[:160]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if not os.environ.get("REDIS_URL"):
        print("chaos: set REDIS_URL (or run under scripts/with_redis.py)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    workdir = Path(tempfile.mkdtemp(prefix="hotswap-chaos-"))
    configure(workdir, namespace=f"chaos-{uuid.uuid4().hex[:8]}")
    import django

    django.setup()
    chaos = Chaos(workdir=workdir, rng=random.Random(seed))
    print(f"chaos: seed {seed}, {args.seconds:g} s, {REPLICAS} replicas, logs in {workdir}")
    try:
        chaos.start()
        chaos.run(seconds=args.seconds)
        chaos.recover()
        checks = chaos.check()
    finally:
        chaos.stop()
    chaos.report(checks)
    return 0 if all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
