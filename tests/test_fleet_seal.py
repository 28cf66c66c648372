"""Write access to the fleet's Redis is not control of the fleet: entries are sealed.

An attacker who can write to Redis but holds no fleet key forges the entries that tell
replicas what to run and serve. Before seals, a forged spec and desired entry made a
replica import and run the attacker's module, and a forged route moved a model's
traffic to a version nobody chose. Each forgery is made here against a real replica,
which must ignore it (and say so in its log); the same change made with the fleet key
takes effect, so each test would fail if the replica still believed Redis blindly.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis

from swaps.engine.fleet import Fleet
from swaps.engine.fleet_keys import FleetKeys, version_field
from swaps.engine.fleet_versions import Quarantine
from swaps.engine.reports import ReplicaReport, sealed_report
from swaps.engine.results import SwapState, SwapStatus, utcnow
from swaps.engine.seal import Seal

from .fleet_models import gated_spec
from .hostile_models import MARK_NAME, hostile_spec
from .live import answer
from .processes import (
    ROOT,
    ReplicaProcess,
    deploy,
    fleet_key,
    fleet_seal,
    start_replica,
    wait_until,
)

ATTACKERS_KEY = "an-attackers-own-key-which-is-long-enough-0123456789"


def test_a_sealed_entry_opens_and_any_change_to_it_is_refused():
    seal = Seal([fleet_key()])
    field = version_field("iris", "2")
    stored = seal.seal("spec", field, b'{"artifact": "iris.joblib"}')

    assert seal.open("spec", field, stored) == b'{"artifact": "iris.joblib"}'
    assert seal.open("spec", field, stored.replace(b"iris.joblib", b"evil.joblib")) is None
    assert seal.open("spec", version_field("iris", "3"), stored) is None  # moved
    assert seal.open("desired", field, stored) is None  # another kind of entry
    assert seal.open("spec", field, b'{"artifact": "iris.joblib"}') is None  # no seal
    assert seal.open("spec", field, Seal([ATTACKERS_KEY]).seal("spec", field, b"{}")) is None


def test_a_rotated_key_still_opens_what_the_previous_one_sealed():
    old, new = Seal([fleet_key()]), Seal([ATTACKERS_KEY, fleet_key()])
    field = version_field("iris", "1")

    assert new.open("desired", field, old.seal("desired", field, b"{}")) == b"{}"
    assert Seal([ATTACKERS_KEY]).open("desired", field, new.seal("desired", field, b"{}"))
    assert new.route_matches("iris", "1", 7, old.route_seal("iris", "1", 7))
    assert not new.route_matches("iris", "1", 8, old.route_seal("iris", "1", 7))  # replayed


@pytest.mark.parametrize("key", ["", "too-short"])
def test_a_missing_or_short_fleet_key_is_refused_naming_the_variable(key):
    with pytest.raises(ValueError, match="HOTSWAP_FLEET_KEY"):
        Seal([key])


@pytest.fixture
def fleet_replica(redis_url, redis_namespace, tmp_path) -> Iterator[ReplicaProcess]:
    """A replica serving `held` 1, with `held` 2 loaded and not routed; TMPDIR is this
    test's, where `leaves_a_mark` writes its mark."""
    replica = start_replica(
        namespace=redis_namespace,
        redis_url=redis_url,
        log_dir=tmp_path,
        env={"TMPDIR": str(tmp_path)},
    )

    specs = [gated_spec(version="1"), gated_spec(version="2")]
    try:
        deploy(redis_url, redis_namespace, specs, routes={"held": "1"}, warm=(("held", "2"),))
        yield replica
    finally:
        replica.stop()


class opened:
    """A Fleet on the test's Redis with the fleet key, closed at the end of the block."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        self.fleet = Fleet.from_url(redis_url, namespace=namespace, seal=fleet_seal())

    async def __aenter__(self) -> Fleet:
        return self.fleet

    async def __aexit__(self, *exc: object) -> None:
        await self.fleet.redis.aclose()


def refused(replica: ReplicaProcess, kind: str) -> bool:
    return f"ignoring a {kind} entry in Redis whose seal does not match" in replica.log()


@pytest.mark.fleet
@pytest.mark.parametrize("forger", [None, Seal([ATTACKERS_KEY])], ids=["unsealed", "own-key"])
def test_a_forged_spec_and_desired_entry_run_no_code_on_a_replica(
    fleet_replica, redis_url, redis_namespace, tmp_path, forger
):
    keys, mark = FleetKeys(redis_namespace), tmp_path / MARK_NAME
    intruder = hostile_spec("leaves_a_mark", model_id="intruder")
    field = version_field("intruder", "1")
    spec = orjson.dumps(intruder.as_dict())
    wanted = orjson.dumps({"request": 10**6, "retire_at": None})
    if forger is not None:
        spec, wanted = forger.seal("spec", field, spec), forger.seal("desired", field, wanted)
    with redis.Redis.from_url(redis_url) as client:
        client.hset(keys.specs, field, spec)
        client.hset(keys.desired, field, wanted)
        client.publish(keys.changes, "intruder")

    wait_until(lambda: refused(fleet_replica, "desired"), timeout=30, what="the refusal")
    assert refused(fleet_replica, "spec")
    assert not mark.exists()
    scraped = httpx.get(f"{fleet_replica.url}/metrics").text  # what an alert would read
    for kind in ("spec", "desired"):
        assert f'hotswap_fleet_entries_refused_total{{kind="{kind}"}} 1.0' in scraped
    assert answer(fleet_replica, "held")["model_version"] == "1"

    # The same version published and loaded with the fleet key does run: the mark above
    # was missing because the replica refused the forgery, not because nothing loads.
    async def load_it() -> None:
        async with opened(redis_url, redis_namespace) as fleet:
            await fleet.publish_spec(intruder)
            await fleet.versions.load("intruder", "1")

    asyncio.run(load_it())
    assert mark.exists()


@pytest.mark.fleet
def test_a_forged_route_moves_no_traffic(fleet_replica, redis_url, redis_namespace):
    keys = FleetKeys(redis_namespace)
    with redis.Redis.from_url(redis_url) as client:
        epoch = int(client.hget(keys.epochs, "held"))
        # Version 2 is loaded (warm) on the replica: only the route would be missing.
        client.hset(keys.routes, "held", "2")
        client.hset(keys.epochs, "held", epoch + 1)
        client.publish(keys.changes, "held")

    wait_until(lambda: refused(fleet_replica, "route"), timeout=30, what="the refusal")
    assert answer(fleet_replica, "held")["model_version"] == "1"

    async def flip() -> None:
        async with opened(redis_url, redis_namespace) as fleet:
            await fleet.router.flip("held", "2")

    asyncio.run(flip())
    assert answer(fleet_replica, "held")["model_version"] == "2"


def test_a_forged_quarantine_is_not_believed_by_the_control_plane(redis_url, redis_namespace):
    keys = FleetKeys(redis_namespace)
    real = Quarantine(reason="its load crashed the process that tried it", replica="r", at=1.0)
    forged = Quarantine(reason="forged", replica="nobody", at=2.0)

    async def scenario() -> dict:
        async with opened(redis_url, redis_namespace) as fleet:
            await fleet.set_quarantine("held", "1", real)
            await fleet.redis.hset(keys.quarantine, version_field("held", "2"), forged.to_json())
            return await fleet.quarantined()

    assert asyncio.run(scenario()) == {("held", "1"): real}


def test_a_replica_without_the_fleet_key_refuses_to_start_naming_it():
    result = subprocess.run(
        [sys.executable, "-m", "swaps.replica", "--port", "1"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "HOTSWAP_FLEET_KEY is not set" in result.stderr


@pytest.mark.fleet
def test_a_replica_given_another_fleet_key_never_reports_ready(
    fleet_replica, redis_url, redis_namespace, tmp_path
):
    stranger = start_replica(
        namespace=redis_namespace,
        redis_url=redis_url,
        log_dir=tmp_path,
        replica_id="stranger",
        env={"HOTSWAP_FLEET_KEY": ATTACKERS_KEY},
    )
    try:
        wait_until(lambda: refused(stranger, "route"), timeout=30, what="the refusal")
        # Synced (it read the fleet and refused its routes), and still not ready.
        assert httpx.get(f"{stranger.url}/v2/health/ready").status_code == 503
        assert httpx.get(f"{fleet_replica.url}/v2/health/ready").status_code == 200
    finally:
        stranger.stop()


def test_a_forged_replica_report_is_not_counted(redis_url, redis_namespace):
    keys = FleetKeys(redis_namespace)
    now = utcnow()
    # It would tell the console (and a drain) that a version served 10,000 requests and
    # has none in flight, and ack any flip.
    forged = ReplicaReport("ghost", "", 1, now, now, incarnation="", served={"held": {"1": 10_000}})
    real = ReplicaReport("replica-a", "", 2, now, now, incarnation="")

    async def scenario() -> list[str]:
        async with opened(redis_url, redis_namespace) as fleet:
            await fleet.redis.set(keys.report("ghost"), forged.to_json(), px=60_000)
            stored = sealed_report(fleet.seal, keys, real)
            await fleet.redis.set(keys.report("replica-a"), stored, px=60_000)
            await fleet.redis.sadd(keys.replicas, "ghost", "replica-a")
            return [report.replica_id for report in await fleet.replicas()]

    assert asyncio.run(scenario()) == ["replica-a"]


@pytest.mark.parametrize("looks_sealed", [True, False], ids=["fake-seal", "bare"])
def test_a_forged_running_operation_on_the_board_blocks_no_swap(
    redis_url, redis_namespace, looks_sealed
):
    keys = FleetKeys(redis_namespace)
    now = utcnow()
    forged = SwapStatus("held", "1", "2", SwapState.SWAPPING, now, 0, operation="swap")
    mine = SwapStatus("held", "1", "3", SwapState.SWAPPING, now, 0, operation="swap")
    raw = orjson.dumps(forged.as_dict())

    async def scenario() -> tuple:
        async with opened(redis_url, redis_namespace) as fleet:
            await fleet.redis.set(
                keys.status("held"), (b"0" * 64 + b"." if looks_sealed else b"") + raw
            )
            shown = await fleet.board.get("held")
            running = await fleet.board.begin(mine)
            return shown, running, await fleet.board.get("held")

    shown, running, after = asyncio.run(scenario())

    assert shown is None  # the console is not shown the forged operation
    assert running is None  # nothing runs: the claim is ours
    assert after.target_version == "3"
