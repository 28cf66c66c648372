"""The control plane's Prometheus metrics, at `GET /metrics` on the console process.

Read when scraped from the records (the database) and the replicas' reports (Redis),
never counted in this process: every console process exports the same numbers, one
that restarts loses none, and an operation run by an RQ worker counts the same as one
run here. Scraping needs no session; with HOTSWAP_METRICS_TOKEN set it needs that
token as a bearer token.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from swaps.fleet_reports import live_reports
from swaps.models import RollbackRequest, ServedModel, Swap
from swaps.serving_metrics import CONTENT_TYPE

# An instant rollback takes tens of milliseconds, a swap that drains up to the drain
# timeout (30 s by default), one that waits on slow loads minutes.
OPERATION_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TOKEN_REQUIRED = "this endpoint needs the metrics bearer token (HOTSWAP_METRICS_TOKEN)"


class MetricsEndpoint:
    """Middleware, first of all: `GET /metrics` is answered before the others run.

    Prometheus scrapes a pod by its IP, over plain HTTP inside the cluster: Django's host
    check (ALLOWED_HOSTS) would refuse it with 400 and SECURE_SSL_REDIRECT send it to
    https. Both protect browsers; the metrics build no URL and set no cookie.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == "/metrics":
            return metrics(request)
        return self.get_response(request)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.HOTSWAP_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            response = HttpResponse(TOKEN_REQUIRED, status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector())
    ProcessCollector(registry=registry)
    return registry


class ControlPlaneCollector(Collector):
    def collect(self) -> Iterator:
        yield from self._operations()
        yield from self._current()
        yield from self._fleet()

    def _operations(self) -> Iterator:
        started = CounterMetricFamily(
            "hotswap_operations_started",
            "Swaps, rollbacks and deploys that started running, by model and kind.",
            labels=["model", "kind"],
        )
        finished = CounterMetricFamily(
            "hotswap_operations_finished",
            "Operations that ended, by model, kind and outcome (completed or failed).",
            labels=["model", "kind", "outcome"],
        )
        duration = HistogramMetricFamily(
            "hotswap_operation_duration_seconds",
            "From an operation's start to its end (a rollback's: to its drain's end).",
            labels=["model", "kind"],
        )
        for row in Swap.objects.values("served_model__name", "kind").annotate(
            started=Count("pk", filter=Q(started_at__isnull=False)),
            completed=Count("pk", filter=Q(state=Swap.State.COMPLETED)),
            failed=Count("pk", filter=Q(state=Swap.State.FAILED)),
        ):
            labels = [row["served_model__name"], row["kind"]]
            started.add_metric(labels, row["started"])
            finished.add_metric([*labels, Swap.State.COMPLETED], row["completed"])
            finished.add_metric([*labels, Swap.State.FAILED], row["failed"])
        for labels, buckets, total in _durations():
            duration.add_metric(labels, buckets, total)
        yield from (started, finished, duration)

    def _current(self) -> Iterator:
        running = GaugeMetricFamily(
            "hotswap_operation_running",
            "1 for each model's operation under way, by its kind and state.",
            labels=["model", "kind", "state"],
        )
        for model, kind, state in Swap.objects.filter(state__in=Swap.RUNNING).values_list(
            "served_model__name", "kind", "state"
        ):
            running.add_metric([model, kind, state], 1)
        waiting = GaugeMetricFamily(
            "hotswap_rollbacks_pending_approval",
            "Rollback requests waiting for a second person to approve them.",
            labels=["model"],
        )
        for row in (
            RollbackRequest.objects.filter(state=RollbackRequest.State.PENDING)
            .values("served_model__name")
            .annotate(n=Count("pk"))
        ):
            waiting.add_metric([row["served_model__name"]], row["n"])
        active = GaugeMetricFamily(
            "hotswap_model_active_version",
            "1 for the version each model serves, as the records say.",
            labels=["model", "version"],
        )
        for model, version in ServedModel.objects.filter(active_version__isnull=False).values_list(
            "name", "active_version__version"
        ):
            active.add_metric([model, version], 1)
        yield from (running, waiting, active)

    def _fleet(self) -> Iterator:
        up = GaugeMetricFamily(
            "hotswap_fleet_up",
            "1 if the fleet's state in Redis could be read for this scrape, else 0.",
        )
        replicas = GaugeMetricFamily(
            "hotswap_fleet_replicas", "Replicas whose heartbeat has not lapsed."
        )
        routed = GaugeMetricFamily(
            "hotswap_fleet_routed_replicas",
            "Live replicas routing each model to each version (all of them, but mid-flip).",
            labels=["model", "version"],
        )
        reports = live_reports(wanted_for="/metrics")
        up.add_metric([], 0 if reports is None else 1)
        if reports is not None:
            replicas.add_metric([], len(reports))
            counts: dict[tuple[str, str], int] = {}
            for report in reports:
                for model, version in report.routes.items():
                    counts[model, version] = counts.get((model, version), 0) + 1
            for (model, version), count in sorted(counts.items()):
                routed.add_metric([model, version], count)
        yield from (up, replicas, routed)


def _durations() -> Iterator[tuple[list[str], list[tuple[str, float]], float]]:
    """Per (model, kind): cumulative bucket counts and the sum, aggregated in SQL."""
    took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    per_bucket = {
        f"le_{index}": Count("pk", filter=Q(took__lte=timedelta(seconds=bound)))
        for index, bound in enumerate(OPERATION_SECONDS)
    }
    rows = (
        Swap.objects.filter(started_at__isnull=False, finished_at__isnull=False)
        .annotate(took=took)
        .values("served_model__name", "kind")
        .annotate(total=Count("pk"), seconds=Sum("took"), **per_bucket)
    )
    for row in rows:
        buckets = [
            (str(bound), float(row[f"le_{index}"])) for index, bound in enumerate(OPERATION_SECONDS)
        ]
        buckets.append(("+Inf", float(row["total"])))
        seconds = row["seconds"].total_seconds() if row["seconds"] is not None else 0.0
        yield [row["served_model__name"], row["kind"]], buckets, seconds
