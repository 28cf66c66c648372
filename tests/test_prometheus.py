"""A real Prometheus scraping two real replicas and the console through a swap: what an
operator's graphs and alerts see, in PromQL."""

from __future__ import annotations

import pytest

from .live import Traffic, api_swap, finished, serve
from .processes import start_replicas, wait_until
from .prometheus import RATE_WINDOW, start_prometheus
from .workers import start_console, start_worker

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

RATES = (
    f'sum by (version) (rate(hotswap_inference_requests_total{{model="iris",code="200"}}'
    f"[{RATE_WINDOW}]))"
)


@pytest.fixture
def stack(live_settings, redis_url, iris_specs, tmp_path):
    replicas = start_replicas(
        2, namespace=live_settings.HOTSWAP_NAMESPACE, redis_url=redis_url, log_dir=tmp_path
    )
    worker = start_worker(tmp_path, HOTSWAP_DRAIN_TIMEOUT="60")
    console = start_console(tmp_path)
    prometheus = start_prometheus(
        tmp_path, {"replica": [r.url for r in replicas], "console": [console.url]}
    )
    serve("iris", [iris_specs["1"], iris_specs["2"]], replicas)
    yield replicas, worker, prometheus
    for process in (prometheus, console, worker, *replicas):
        process.stop()


def test_a_swap_moves_the_request_rate_from_the_old_version_to_the_new(alice, stack):
    replicas, worker, prometheus = stack
    wait_until(
        lambda: (
            prometheus.by("up", "job") == {"replica": 1.0, "console": 1.0}
            and len(prometheus.query("up == 1")) == 3
        ),
        timeout=30,
        what="prometheus to scrape both replicas and the console",
    )

    with Traffic(replicas) as traffic:
        wait_until(
            lambda: prometheus.by(RATES, "version").get("1", 0) > 0,
            timeout=30,
            what="version 1's request rate",
        )
        swap = finished(api_swap(alice, "iris", "1", "2"), worker)
        assert swap.state == "completed", swap.message
        rates = wait_until(
            lambda: (
                (r := prometheus.by(RATES, "version")).get("2", 0) > 0 and r.get("1", 0) == 0 and r
            ),
            timeout=30,
            what="the request rate to move from version 1 to version 2",
        )

    assert traffic.failures() == {}
    assert set(rates) == {"1", "2"}  # version 1's series is still there, at rate 0
    failed = prometheus.query('sum(hotswap_inference_requests_total{code!="200"}) or vector(0)')
    assert float(failed[0]["value"][1]) == 0
    completed = prometheus.query(
        'hotswap_operations_finished_total{model="iris",kind="swap",outcome="completed"}'
    )
    assert [float(s["value"][1]) for s in completed] == [1.0]
    routed = prometheus.by('count by (version) (hotswap_route_version{model="iris"})', "version")
    assert routed == {"2": 2.0}  # both replicas route to version 2
