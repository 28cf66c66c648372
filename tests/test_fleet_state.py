"""The database is the source of truth: what republishing writes to the fleet, and when."""

from __future__ import annotations

import pytest
from django.test import override_settings

from swaps import fleet_state, jobs, swapping
from swaps.models import ServedModel

pytestmark = pytest.mark.django_db


def test_the_snapshot_holds_each_served_model_route_and_history(alice, served_before):
    snapshot = fleet_state.database_snapshot()

    assert snapshot.routes == {"iris": ("2", ["1", "2"])}


def test_the_snapshot_holds_every_registered_version(serving_version):
    specs = fleet_state.database_snapshot().specs

    assert sorted((s.model_id, s.version) for s in specs) == [("iris", v) for v in "123"]


def test_a_model_that_serves_nothing_has_no_route(serving_version):
    ServedModel.objects.create(name="unrouted")

    assert "unrouted" not in fleet_state.database_snapshot().routes


def test_republishing_restores_a_route_the_fleet_lost(serving_version, engine):
    engine.router.apply("iris", "2", 50)  # the fleet drifted from the database

    fleet_state.republish_from_database()

    assert engine.route("iris") == "1"


def test_republishing_leaves_a_model_mid_swap_to_its_swap(alice, candidate_version, engine):
    swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")

    fleet_state.republish_from_database()

    assert engine.republished[-1] == {}


def test_an_empty_redis_gets_every_route_back_even_mid_swap(alice, candidate_version, engine):
    swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")
    engine.empty = True

    fleet_state.republish_from_database()

    assert engine.republished[-1] == {"iris": ("1", ["1"])}


def test_any_engine_call_republishes_first_if_redis_came_back_empty(
    alice, candidate_version, engine
):
    engine.empty = True
    swap = swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="t")

    jobs.run_swap(swap.pk)

    assert engine.republished[-1] == {"iris": ("1", ["1"])}


@pytest.mark.django_db(transaction=True)  # it reads the database from a thread of its own
@override_settings(HOTSWAP_REPUBLISH_ON_START=True)
def test_a_process_republishes_as_it_starts(serving_version, engine):
    engine.router.apply("iris", "2", 50)  # the fleet drifted while nobody was running

    fleet_state.republish_at_startup()

    assert engine.route("iris") == "1"


@override_settings(HOTSWAP_REPUBLISH_ON_START=True)
def test_a_fleet_that_cannot_be_reached_does_not_stop_start_up(serving_version, settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    with fleet_state.use_engine(fleet_state.open_fleet):
        fleet_state.republish_at_startup()  # raises nothing: the process starts

    # It says why, and why is the unreachable fleet (not any other error swallowed).
    (warning,) = [r for r in caplog.records if r.name == "swaps.fleet_state"]
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith("could not republish the fleet state at start-up:")
    assert "127.0.0.1:1" in warning.getMessage()
