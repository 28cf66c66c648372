"""The serving path: route a request, count it in flight, run the model, count it out.

Everything here is process-local and synchronous: a dict read and a counter bump under
the router's lock, then the model. No database, no Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from time import perf_counter
from typing import NamedTuple

import numpy as np

from .errors import NotServing, UnknownModel
from .inflight import FAILED, SERVED, LocalInflight
from .ports import LoadedModel
from .router import LocalRouter
from .versions import LocalVersions

NO_ROUTE = "model {model_id!r} is not served here"
NOT_LOADED = "version {version!r} of model {model_id!r} is not loaded here"


class Inference(NamedTuple):  # a tuple: built once per request, cheaply
    model_id: str
    version: str  # the version that answered: every response names it
    outputs: dict[str, np.ndarray]


def routed_or_in_flight(router: LocalRouter, inflight: LocalInflight) -> Callable[[str, str], bool]:
    """Whether a version must stay loaded here: it is routed to, or requests are in flight
    on it (what `LocalVersions` asks before it unloads)."""

    def in_use(model_id: str, version: str) -> bool:
        return router.serves(model_id, version) or inflight.pending_now(model_id, version) > 0

    return in_use


class Dispatcher:
    def __init__(
        self, *, router: LocalRouter, inflight: LocalInflight, versions: LocalVersions
    ) -> None:
        self.router = router
        self.inflight = inflight
        self.versions = versions

    def begin(
        self, model_id: str, version: str | None = None, key: str | None = None
    ) -> tuple[str, LoadedModel]:
        """Choose the version and count the request in flight, atomically with any flip.

        `version` pins it; else the route chooses, by the request's routing `key` where
        a canary splits it. Returns the version and its loaded model; the caller must
        call `end` once.
        """
        with self.router.lock:
            chosen = version if version is not None else self.router.resolve(model_id, key)
            if chosen is None:
                raise UnknownModel(NO_ROUTE.format(model_id=model_id))
            model = self.versions.loaded(model_id, chosen)
            if model is None:
                raise NotServing(NOT_LOADED.format(model_id=model_id, version=chosen))
            self.inflight.enter(model_id, chosen)
        return chosen, model

    def end(
        self, model_id: str, version: str, outcome: str = SERVED, seconds: float | None = None
    ) -> None:
        """The request `begin` counted is over: served, a client error or a failure, in
        `seconds` (its version's latency histogram counts it) if given."""
        self.inflight.exit(model_id, version, outcome, seconds)

    def infer(
        self, model_id: str, inputs: Mapping[str, np.ndarray], *, version: str | None = None
    ) -> Inference:
        started = perf_counter()
        chosen, model = self.begin(model_id, version)
        outcome = FAILED
        try:
            outputs = model.predict(inputs)
            outcome = SERVED
        finally:
            self.end(model_id, chosen, outcome, perf_counter() - started)
        return Inference(model_id=model_id, version=chosen, outputs=outputs)
