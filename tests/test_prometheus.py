"""A real Prometheus scraping two real replicas and the console through a swap: what an
operator's graphs and alerts see, in PromQL."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .live import Traffic, api_swap, finished, serve
from .processes import ROOT, Process, ReplicaProcess, start_replicas, wait_until
from .prometheus import RATE_WINDOW, PrometheusProcess, start_prometheus
from .workers import ConsoleProcess, start_console, start_worker

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

RATES = (
    f'sum by (version) (rate(hotswap_inference_requests_total{{model="iris",code="200"}}'
    f"[{RATE_WINDOW}]))"
)


@dataclass
class Stack:
    replicas: list[ReplicaProcess]
    worker: Process
    console: ConsoleProcess
    prometheus: PrometheusProcess


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
    yield Stack(replicas, worker, console, prometheus)
    for process in (prometheus, console, worker, *replicas):
        process.stop()


def scraped(prometheus: PrometheusProcess) -> None:
    wait_until(
        lambda: (
            prometheus.by("up", "job") == {"replica": 1.0, "console": 1.0}
            and len(prometheus.query("up == 1")) == 3
        ),
        timeout=30,
        what="prometheus to scrape both replicas and the console",
    )


def test_a_swap_moves_the_request_rate_from_the_old_version_to_the_new(alice, stack):
    replicas, worker, prometheus = stack.replicas, stack.worker, stack.prometheus
    scraped(prometheus)

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


DASHBOARD = ROOT / "deploy" / "grafana" / "hotswap.json"
# What Grafana puts in before it sends a query: every model, and the usual intervals.
GRAFANA_VARIABLES = {
    "$model": ".*",
    "$__rate_interval": RATE_WINDOW,
    "$__interval": "1s",
}
METRIC = re.compile(r"\bhotswap_[a-z_]+\b")


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard, by where it is."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {
        f"panel {panel['title']!r} {target['refId']}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }
    for annotation in dashboard["annotations"]["list"]:
        queries[f"annotation {annotation['name']!r}"] = annotation["expr"]
    return queries


def as_grafana_sends(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def exported_names(urls: list[str]) -> set[str]:
    """Every sample name our /metrics can give, whether or not it has samples now."""
    names = set()
    for url in urls:
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_count", "_sum"),
            }.get(family.type, ("",))
            names |= {family.name + suffix for suffix in suffixes}
    return names


def test_every_dashboard_query_runs_and_names_only_metrics_we_export(stack):
    exported = exported_names([*(r.url for r in stack.replicas), stack.console.url])
    queries = dashboard_queries()
    named = {name for query in queries.values() for name in METRIC.findall(query)}
    assert named - exported == set(), "the dashboard names metrics nobody exports"
    scraped(stack.prometheus)

    with Traffic(stack.replicas):
        wait_until(
            lambda: stack.prometheus.by(RATES, "version").get("1", 0) > 0,
            timeout=30,
            what="version 1's request rate",
        )
        answers = {
            where: stack.prometheus.query(as_grafana_sends(query))  # an error fails here
            for where, query in queries.items()
        }

    served = answers["panel 'Requests served per second, by answering version' A"]
    assert {s["metric"]["version"] for s in served if float(s["value"][1]) > 0} == {"1"}
    latency = answers["panel 'Request latency p50 / p99, by answering version' B"]
    assert latency and all(0 < float(s["value"][1]) < 10 for s in latency)
