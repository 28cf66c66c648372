"""PostgreSQL stops while a swap drains, and comes back after the drain ended.

The swap's worker cannot write its outcome and its job fails; replicas, which never
touch the database, serve throughout. Once PostgreSQL is back the worker's sweep
finds the swap still Draining with no runner, and recovery completes it from what the
fleet did. Everything here runs on a private PostgreSQL (tests/faults/postgres.py):
the control plane's processes get its URL; the test reads the rows with psycopg.
"""

from __future__ import annotations

import json

import psycopg
import pytest
import redis
from rq.job import Job

from swaps import job_queue
from tests.fleet_models import gated_spec
from tests.live import Held, Traffic, answer, pending, route
from tests.processes import wait_until
from tests.workers import manage

from .postgres import start_postgres

pytestmark = pytest.mark.faults

SETUP = """
from django.utils import timezone
from swaps import fleet_state
from swaps.engine.spec import VersionSpec
from swaps.models import ServedModel
from tests.control_plane import OPERATOR, add_version, make_user

make_user("alice", OPERATOR)
served = ServedModel.objects.create(name="held")
specs = [VersionSpec.from_dict(spec) for spec in {specs}]
served.active_version = add_version(served, specs[0], first_served_at=timezone.now())
add_version(served, specs[1])
served.save()
fleet_state.republish_from_database()
"""


@pytest.fixture
def postgres():
    try:
        server = start_postgres()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.remove()


@pytest.fixture
def on_postgres(postgres, live_settings) -> dict[str, str]:
    """The environment that puts a control-plane process on the private PostgreSQL."""
    env = {"DATABASE_URL": postgres.url}
    for command in (("migrate", "--no-input"), ("shell", "-c", setup_code())):
        done = manage(*command, **env)
        assert done.returncode == 0, done.stderr
    return env


def setup_code() -> str:
    specs = [gated_spec(version=v).as_dict() for v in "12"]
    return SETUP.format(specs=json.dumps(specs))


def query(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url.replace("postgres://", "postgresql://"), connect_timeout=5) as db:
        return db.execute(sql, params).fetchall()


def swap_state(url: str, swap_id: int) -> str:
    return query(url, "SELECT state FROM swaps_swap WHERE id = %s", swap_id)[0][0]


def job_done(live_settings, job_id: str) -> bool:
    with redis.Redis.from_url(live_settings.REDIS_URL) as client:
        return Job.fetch(
            job_id, connection=client, serializer=job_queue.SERIALIZER
        ).get_status() in (
            "finished",
            "failed",
        )


def test_postgres_stopped_mid_swap_is_recovered_once_it_is_back(
    postgres, on_postgres, live_settings, start_fleet, start_workers
):
    replicas = start_fleet(1)
    (replica,) = replicas
    wait_until(lambda: answer(replica, "held").get("model_version"), timeout=60, what="a route")
    worker = start_workers(**on_postgres)
    held = Held(replica)
    wait_until(lambda: pending("held", "1") == 1, timeout=30, what="a request in flight")

    with Traffic(replicas, model="held") as traffic:
        started = manage("swap", "held", "1", "2", "--user", "alice", "--json", **on_postgres)
        swap = json.loads(started.stdout)
        wait_until(
            lambda: swap_state(postgres.url, swap["id"]) == "draining",
            timeout=60,
            what="the swap to drain",
        )
        postgres.stop()
        held.release()  # the drain ends while the worker has no database
        assert held.outcome()["model_version"] == "1"
        wait_until(
            lambda: job_done(live_settings, swap["rq_job_id"]),
            timeout=60,
            what="the swap's job to end without its database",
        )
        postgres.start()
        wait_until(
            lambda: swap_state(postgres.url, swap["id"]) in ("completed", "failed"),
            timeout=90,
            what=f"recovery of the swap; worker log:\n{worker.log()}",
        )

    active = query(
        postgres.url,
        "SELECT v.version FROM swaps_servedmodel m "
        "JOIN swaps_modelversion v ON v.id = m.active_version_id WHERE m.name = 'held'",
    )
    trail = query(
        postgres.url,
        "SELECT actor, action, outcome FROM swaps_auditentry WHERE model = 'held' ORDER BY id",
    )
    assert traffic.failures() == {}
    assert swap_state(postgres.url, swap["id"]) == "completed"
    assert not query(
        postgres.url, "SELECT id FROM swaps_swap WHERE state IN ('pending', 'swapping', 'draining')"
    )
    assert active[0][0] == route("held") == answer(replica, "held")["model_version"] == "2"
    assert trail == [
        ("alice", "start_swap", "accepted"),
        ("sweep", "recover", "accepted"),
        ("alice", "finish", "completed"),
    ]
