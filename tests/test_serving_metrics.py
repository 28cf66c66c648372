"""A replica's /metrics, read the way Prometheus reads it, from a real replica process.

The replica (`gateway_replica`, conftest.py) serves iris 1 (active), iris 2 (loaded,
reachable pinned) and held 1. Counters are compared before and after, since the
replica is shared by the module.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .fleet_models import Gate
from .processes import wait_until

IRIS = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5, 3, 1, 0]}]}


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample, by name and labels."""
    answer = httpx.get(f"{url}/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples, version: str, code: str, model: str = "iris") -> float:
    return value(
        samples, "hotswap_inference_requests_total", model=model, version=version, code=code
    )


def test_requests_are_counted_under_the_version_that_answered(gateway_replica):
    url = gateway_replica.url
    before = scrape(url)

    assert httpx.post(f"{url}/v2/models/iris/infer", json=IRIS).status_code == 200
    pinned = httpx.post(f"{url}/v2/models/iris/versions/2/infer", json=IRIS)
    assert pinned.status_code == 200
    after = scrape(url)

    assert requests(after, "1", "200") - requests(before, "1", "200") == 1
    assert requests(after, "2", "200") - requests(before, "2", "200") == 1
    for version in ("1", "2"):  # each answer timed under its own version
        for histogram in (
            "hotswap_inference_request_duration_seconds_count",
            "hotswap_model_predict_duration_seconds_count",
        ):
            grown = value(after, histogram, model="iris", version=version) - value(
                before, histogram, model="iris", version=version
            )
            assert grown == 1, (histogram, version)


def test_a_failed_request_is_counted_as_its_error_never_as_served(gateway_replica):
    url = gateway_replica.url
    wrong_type = {"inputs": [{**IRIS["inputs"][0], "datatype": "INT64", "data": [5, 3, 1, 0]}]}
    before = scrape(url)

    assert httpx.post(f"{url}/v2/models/iris/infer", json=wrong_type).status_code == 400
    assert httpx.post(f"{url}/v2/models/nobody/infer", json=IRIS).status_code == 404
    assert httpx.post(f"{url}/v2/models/iris/infer", content=b"{not json").status_code == 400
    after = scrape(url)

    assert requests(after, "1", "400") - requests(before, "1", "400") == 1
    assert requests(after, "1", "200") == requests(before, "1", "200")
    # Refused before any version took them, and never under a model the client made up.
    refused = "hotswap_inference_refused_total"
    assert value(after, refused, code="404") - value(before, refused, code="404") == 1
    assert value(after, refused, code="400") - value(before, refused, code="400") == 1
    assert not [key for key in after if dict(key[1]).get("model") == "nobody"]


def test_requests_in_flight_are_shown_while_they_run(gateway_replica, redis_url):
    url = gateway_replica.url
    gate = Gate(redis_url, gateway_replica.namespace)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.post, f"{url}/v2/models/held/infer", json=gate.body(), timeout=30)
        try:
            wait_until(
                lambda: (
                    value(scrape(url), "hotswap_inference_in_flight", model="held", version="1")
                    == 1
                ),
                timeout=10,
                what="the held request in the in-flight gauge",
            )
        finally:
            gate.release()
        assert held.result().status_code == 200

    assert value(scrape(url), "hotswap_inference_in_flight", model="held", version="1") == 0


def test_loaded_versions_routes_and_memory_are_exported(gateway_replica):
    samples = scrape(gateway_replica.url)

    assert value(samples, "hotswap_model_loaded", model="iris", version="1") == 1
    assert value(samples, "hotswap_model_loaded", model="iris", version="2") == 1
    assert value(samples, "hotswap_model_loaded", model="iris", version="3") == 0
    assert value(samples, "hotswap_route_version", model="iris", version="1") == 1
    assert value(samples, "hotswap_route_epoch", model="iris") >= 1
    assert value(samples, "hotswap_model_memory_bytes", model="iris", version="1") > 0
    assert value(samples, "hotswap_model_load_duration_seconds", model="iris", version="2") > 0
    assert value(samples, "process_resident_memory_bytes") > 0


def test_metrics_take_get_only(gateway_replica):
    answer = httpx.post(f"{gateway_replica.url}/metrics", content=b"")

    assert answer.status_code == 405
    assert "takes GET" in answer.json()["error"]
