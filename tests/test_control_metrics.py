"""The console's /metrics: the control plane as Prometheus sees it, read from the records
and the replicas' reports."""

from __future__ import annotations

import pytest
import redis
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from swaps import jobs, rollbacks, swapping
from swaps.engine.fleet_keys import FleetKeys
from swaps.engine.reports import ReplicaReport, sealed_report
from swaps.engine.results import utcnow
from swaps.models import ServedModel
from tests.processes import fleet_seal

pytestmark = pytest.mark.django_db


def scrape(client: Client | None = None, **headers) -> dict[tuple[str, frozenset], float]:
    answer = (client or Client()).get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.content.decode())
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def swap(user, target: str, source: str = "1"):
    started = swapping.start_swap(
        model="iris", from_version=source, to_version=target, user=user, via="test"
    )
    jobs.run_swap(started.pk)
    return started


def test_operations_are_counted_by_model_kind_and_outcome(alice, candidate_version, engine):
    swap(alice, "2")  # completes
    swap(alice, "3", source="2")  # iris 3 is broken: its health check fails the swap

    samples = scrape()

    started = value(samples, "hotswap_operations_started_total", model="iris", kind="swap")
    assert started == 2
    finished = "hotswap_operations_finished_total"
    assert value(samples, finished, model="iris", kind="swap", outcome="completed") == 1
    assert value(samples, finished, model="iris", kind="swap", outcome="failed") == 1
    took = "hotswap_operation_duration_seconds"
    assert value(samples, f"{took}_count", model="iris", kind="swap") == 2
    assert value(samples, f"{took}_bucket", model="iris", kind="swap", le="+Inf") == 2
    assert value(samples, f"{took}_sum", model="iris", kind="swap") > 0
    assert value(samples, "hotswap_model_active_version", model="iris", version="2") == 1


def test_a_rollback_waiting_for_approval_is_shown_until_decided(alice, bob, served_before):
    ServedModel.objects.filter(name="iris").update(rollback_requires_approval=True)
    request = rollbacks.request_rollback(
        model="iris", target_version="1", reason="bad answers", user=alice, via="test"
    )
    assert value(scrape(), "hotswap_rollbacks_pending_approval", model="iris") == 1

    rollbacks.reject_rollback(request_id=request.pk, user=bob, via="test")

    assert value(scrape(), "hotswap_rollbacks_pending_approval", model="iris") == 0


def test_an_operation_under_way_is_shown_with_its_state(alice, candidate_version):
    swapping.start_swap(model="iris", from_version="1", to_version="2", user=alice, via="test")

    running = value(
        scrape(), "hotswap_operation_running", model="iris", kind="swap", state="pending"
    )
    assert running == 1


def test_the_fleet_is_counted_from_the_replicas_reports(db, control_plane, redis_url):
    keys = FleetKeys(control_plane)
    now = utcnow()
    report = ReplicaReport("replica-a", "", 1, now, now, incarnation="", routes={"iris": "2"})
    with redis.Redis.from_url(redis_url) as client:
        client.set(keys.report("replica-a"), sealed_report(fleet_seal(), keys, report), px=60_000)
        client.sadd(keys.replicas, "replica-a")

    samples = scrape()

    assert value(samples, "hotswap_fleet_up") == 1
    assert value(samples, "hotswap_fleet_replicas") == 1
    assert value(samples, "hotswap_fleet_routed_replicas", model="iris", version="2") == 1


def test_a_fleet_out_of_reach_says_so_and_the_rest_is_still_exported(
    alice, candidate_version, settings
):
    swap(alice, "2")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    samples = scrape()

    assert value(samples, "hotswap_fleet_up") == 0
    started = value(samples, "hotswap_operations_started_total", model="iris", kind="swap")
    assert started == 1


def test_with_a_token_set_scraping_needs_it(db, settings):
    settings.HOTSWAP_METRICS_TOKEN = "scrape-secret"

    assert Client().get("/metrics").status_code == 401
    wrong = Client().get("/metrics", headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    assert scrape(Authorization="Bearer scrape-secret")


def test_prometheus_scraping_a_pod_by_its_ip_over_http_is_answered(db, settings):
    settings.ALLOWED_HOSTS = ["hotswap.example.com"]
    settings.SECURE_SSL_REDIRECT = True

    answer = Client().get("/metrics", headers={"host": "10.1.2.3:8000"})

    assert answer.status_code == 200
    assert Client().get("/", headers={"host": "10.1.2.3:8000"}).status_code == 400


def test_metrics_take_get_only(db):
    assert Client().post("/metrics").status_code == 405
