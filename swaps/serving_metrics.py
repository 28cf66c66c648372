"""What a replica measures, in the Prometheus text format at `GET /metrics`.

Every label names the version that *answered*: a request to the model's route is
counted under the version the route chose for it, so the traffic moving from one
version to the other during a swap is visible as it happens (MLServer labels the
version asked for, and unversioned traffic shows up as `version="None"`).

The serving path pays for one dict lookup and three increments per request (its
outcome, and the request's and the model's time in two histograms); everything else
(in flight, loaded versions and their memory, routes) is read from the replica when
Prometheus scrapes. bench/serving.py measures the difference (README, "Monitoring").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .engine.serving import Dispatcher

__all__ = ["CONTENT_TYPE", "ServingMetrics"]

# The text format every Prometheus 2 reads (the client's newest, 1.0.0, needs Prometheus 3).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
Key = tuple[str, str]
# From a fraction of a millisecond (a small model, in process) to the seconds a model
# that hangs is given: p50 and p99 stay readable for both.
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ReplicaCounts(Protocol):
    """What the replica counts itself, read at scrape: failed loads per (model, version),
    and the fleet entries it ignored for their seal, per kind."""

    def load_failures(self) -> Mapping[Key, int]: ...

    def refused_entries(self) -> Mapping[str, int]: ...


class ServingMetrics:
    def __init__(self, dispatcher: Dispatcher, *, loads: ReplicaCounts | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "hotswap_inference_requests",
            "Inference requests a version took, by the version that answered and the "
            "HTTP status it got (499: the client went away).",
            ["model", "version", "code"],
            registry=self.registry,
        )
        self._refused = Counter(
            "hotswap_inference_refused",
            "Inference requests refused before any version took them: malformed (400), "
            "unknown model or version (404), too large (413), not ready or not loaded here "
            "(503). No model label: the path is the client's to make up.",
            ["code"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "hotswap_inference_request_duration_seconds",
            "Time from the request's body read to its answer encoded, by answering version.",
            ["model", "version"],
            buckets=SECONDS,
            registry=self.registry,
        )
        self._predict = Histogram(
            "hotswap_model_predict_duration_seconds",
            "The model's own predict time, without the protocol's decoding and encoding.",
            ["model", "version"],
            buckets=SECONDS,
            registry=self.registry,
        )
        self.registry.register(_FleetView(dispatcher, loads))
        ProcessCollector(registry=self.registry)
        self._children: dict[tuple[str, str, int], tuple] = {}
        self._lock = threading.Lock()

    def answered(
        self, model_id: str, version: str, code: int, seconds: float, predict_seconds: float
    ) -> None:
        """One request a version took, on the serving path: keep it cheap."""
        children = self._children.get((model_id, version, code))
        if children is None:
            children = self._children_of(model_id, version, code)
        requests, duration, predict = children
        requests.inc()
        duration.observe(seconds)
        if predict_seconds >= 0:  # < 0: the request never reached the model
            predict.observe(predict_seconds)

    def refused(self, code: int) -> None:
        self._refused.labels(str(code)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def _children_of(self, model_id: str, version: str, code: int) -> tuple:
        with self._lock:
            children = (
                self._requests.labels(model_id, version, str(code)),
                self._duration.labels(model_id, version),
                self._predict.labels(model_id, version),
            )
            self._children[model_id, version, code] = children
            return children


class _FleetView(Collector):
    """What the replica holds right now, read when scraped."""

    def __init__(self, dispatcher: Dispatcher, loads: ReplicaCounts | None) -> None:
        self._dispatcher = dispatcher
        self._loads = loads

    def collect(self) -> Iterator:
        versions, router = self._dispatcher.versions, self._dispatcher.router
        in_flight = GaugeMetricFamily(
            "hotswap_inference_in_flight",
            "Requests a version is answering now.",
            labels=["model", "version"],
        )
        for (model_id, version), count in self._dispatcher.inflight.snapshot().pending.items():
            in_flight.add_metric([model_id, version], count)
        yield in_flight

        loaded = GaugeMetricFamily(
            "hotswap_model_loaded",
            "1 for each version loaded on this replica.",
            labels=["model", "version"],
        )
        memory = GaugeMetricFamily(
            "hotswap_model_memory_bytes",
            "The memory a loaded version took, measured while it loaded.",
            labels=["model", "version"],
        )
        load_time = GaugeMetricFamily(
            "hotswap_model_load_duration_seconds",
            "How long a loaded version took to load.",
            labels=["model", "version"],
        )
        for model_id, version in versions.loaded_keys():
            model = versions.loaded(model_id, version)
            if model is None:  # unloaded since the keys were read
                continue
            loaded.add_metric([model_id, version], 1)
            memory.add_metric([model_id, version], model.memory_bytes)
            load_time.add_metric([model_id, version], model.load_seconds)
        yield from (loaded, memory, load_time)

        failures = CounterMetricFamily(
            "hotswap_model_load_failures",
            "Loads of a version that failed on this replica.",
            labels=["model", "version"],
        )
        counted = self._loads.load_failures() if self._loads is not None else {}
        for (model_id, version), count in counted.items():
            failures.add_metric([model_id, version], count)
        yield failures

        refused = CounterMetricFamily(
            "hotswap_fleet_entries_refused",
            "Entries of the fleet's Redis this replica ignored because their seal did not "
            "match (forged, altered, or sealed with another HOTSWAP_FLEET_KEY), each once.",
            labels=["kind"],
        )
        for kind, count in (self._loads.refused_entries() if self._loads else {}).items():
            refused.add_metric([kind], count)
        yield refused

        routed = GaugeMetricFamily(
            "hotswap_route_version",
            "1 for the version each model's unpinned requests go to on this replica.",
            labels=["model", "version"],
        )
        epoch = GaugeMetricFamily(
            "hotswap_route_epoch",
            "The route epoch this replica applied: it rises by one with every flip.",
            labels=["model"],
        )
        for model_id, route in router.routes().items():
            routed.add_metric([model_id, route.version], 1)
            epoch.add_metric([model_id], route.epoch)
        yield from (routed, epoch)
