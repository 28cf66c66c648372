"""Republishing makes the fleet's desired set and quarantine match the database."""

from __future__ import annotations

import asyncio

import orjson

from swaps.engine.fleet import Fleet
from swaps.engine.fleet_keys import version_field
from swaps.engine.fleet_versions import Quarantine, desired_entry
from tests.fleet_models import gated_spec
from tests.processes import fleet_seal


def test_republish_retires_what_a_failed_operation_left_desired_and_writes_quarantines(
    redis_url, redis_namespace
):
    specs = [gated_spec(version="1"), gated_spec(version="2"), gated_spec(version="3")]
    crashed = Quarantine(reason="its load crashed the process that tried it", replica="", at=1.0)

    async def scenario() -> dict:
        fleet = Fleet.from_url(redis_url, namespace=redis_namespace, seal=fleet_seal())
        try:
            keys = fleet.keys
            # Version 2: asked for by a swap whose runner died, never retired (the entry
            # that made every new replica load a crashing version at start). Version 3:
            # kept warm after a swap, its unload already scheduled.
            for version, request, retire_at in [("2", 7, None), ("3", 5, 9e9)]:
                field = version_field("held", version)
                entry = desired_entry(fleet.seal, field, request=request, retire_at=retire_at)
                await fleet.redis.hset(keys.desired, field, entry)
            await fleet.republish(
                specs=specs,
                routes={"held": ("1", ["3", "1"])},
                settled={"held"},
                quarantined={("held", "2"): crashed},
            )
            stored = await fleet.redis.hgetall(keys.desired)
            desired = {
                field: orjson.loads(raw)
                for field, raw in fleet.seal.open_all("desired", stored).items()
            }
            return {"desired": desired, "quarantined": await fleet.quarantined()}
        finally:
            await fleet.redis.aclose()

    state = asyncio.run(scenario())

    desired = state["desired"]
    assert desired[version_field("held", "1")]["retire_at"] is None
    assert desired[version_field("held", "2")]["retire_at"] is not None
    assert desired[version_field("held", "2")]["request"] == 7
    assert desired[version_field("held", "3")]["retire_at"] == 9e9  # its keep-warm stands
    assert state["quarantined"] == {("held", "2"): crashed}
