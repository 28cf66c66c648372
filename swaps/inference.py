"""One inference, whatever protocol carried it: route, check, predict, count, measure.

REST (`swaps.gateway`) and gRPC (`swaps.grpc_gateway`) decode their requests into an
`InferenceRequest` (swaps/v2_codec.py) and hand it here; what comes back goes to their
own encoder. So both protocols share the routing (`Dispatcher.begin`, atomic with any
flip), the in-flight count a drain waits for, the errors and the metrics.

Every refusal is a `ServingError` with the HTTP status REST answers; gRPC maps the
status to its code (`grpc_gateway.GRPC_CODES`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any, Protocol, TypeVar

import numpy as np

from .engine.batching import Batcher
from .engine.errors import NotServing, UnknownModel
from .engine.inflight import CLIENT_ERROR, FAILED, SERVED
from .engine.ports import LoadedModel
from .engine.runtimes import describe_exception
from .engine.serving import Dispatcher
from .model_threads import ModelThreads
from .serving_metrics import ServingMetrics
from .v2_codec import BadRequest, InferenceRequest, check_inputs

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVER_NAME = "hotswap"
SERVER_VERSION = "0.1.0"
SERVER_EXTENSIONS = ("binary_tensor_data",)

NOT_READY = "this replica is not ready yet: it has not synced with the fleet"
UNKNOWN_MODEL = "unknown model {model_id!r}"
UNKNOWN_VERSION = "unknown version {version!r} of model {model_id!r}"
NO_ACTIVE_VERSION = "model {model_id!r} has no active version on this replica"
VERSION_NOT_LOADED = "version {version!r} of model {model_id!r} is not loaded on this replica"
MODEL_FAILED = "version {version!r} of model {model_id!r} failed on this request: {error}"

# A request carrying this header lands on the same side of a rollout's split for the
# same key (session affinity), on every replica; REST reads it as a header, gRPC as
# invocation metadata.
ROUTING_KEY_HEADER = "hotswap-routing-key"


class Backend(Protocol):
    """What inference is served from: a replica (swaps.replica.Replica) in practice."""

    dispatcher: Dispatcher

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ServingError(Exception):
    """A request refused or failed, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# What a protocol turns the answering version and its outputs into (REST: a body).
Encode = Callable[[str, Mapping[str, np.ndarray]], T]


class Inferencer:
    def __init__(
        self,
        backend: Backend,
        *,
        threads: ModelThreads | None,
        metrics: ServingMetrics | None,
    ) -> None:
        self.backend = backend
        self.dispatcher = backend.dispatcher
        # None runs the model on the event loop: measured in bench/serving.py, and unsafe
        # with a model that can hang (it would stop health answers and heartbeats).
        self.threads = threads
        self.metrics = metrics
        # One per loaded batched version, keyed by the model object: a version loaded
        # again (a new object) never joins the batches of the one it replaced. Weakly, and
        # the batcher holds its model only weakly too: an unloaded version's memory goes
        # back once its last request is answered (each request holds its model meanwhile).
        self._batchers: weakref.WeakKeyDictionary[LoadedModel, Batcher] = (
            weakref.WeakKeyDictionary()
        )

    def refused(self, status: int) -> None:
        """A request refused before any version took it (malformed, too large ...)."""
        if self.metrics is not None:
            self.metrics.refused(status)

    async def infer(
        self,
        model_id: str,
        version: str | None,
        request: InferenceRequest,
        encode: Encode[T],
        *,
        started: float,
        routing_key: str | None = None,
    ) -> T:
        """The request answered by the version routing chooses (or `version`), encoded.

        `started`: perf_counter() when the protocol began reading the request; the
        request's duration metric runs from there to its answer encoded. `routing_key`:
        the request's `ROUTING_KEY_HEADER`, if it sent one.
        """
        try:
            chosen, model = await self._begin(model_id, version, routing_key)
        except ServingError as refusal:
            self.refused(refusal.status)
            raise
        outcome, code, predict_seconds = FAILED, 500, -1.0
        try:
            inputs = check_inputs(request, model.inputs)
            if model.spec.batching:
                outputs, predict_seconds = await self._batcher(model).predict(inputs)
            elif self.threads is None:
                outputs, predict_seconds = _timed_predict((model, inputs))
            else:
                outputs, predict_seconds = await self.threads.run(
                    _timed_predict, (model, inputs), key=(model_id, chosen)
                )
            answer = encode(chosen, outputs)
            outcome, code = SERVED, 200
        except BadRequest as exc:
            outcome, code = CLIENT_ERROR, 400
            raise ServingError(400, exc.message) from None
        except asyncio.CancelledError:
            # The client went away (what proxies log as 499): not the model's failure.
            outcome, code = CLIENT_ERROR, 499
            raise
        except Exception as exc:
            log.exception("version %s of model %s failed", chosen, model_id)
            message = MODEL_FAILED.format(
                model_id=model_id, version=chosen, error=describe_exception(exc)
            )
            raise ServingError(500, message) from None
        finally:
            # One figure for both: the report's histogram and Prometheus' agree.
            seconds = perf_counter() - started
            self.dispatcher.end(model_id, chosen, outcome, seconds)
            if self.metrics is not None:
                self.metrics.answered(model_id, chosen, code, seconds, predict_seconds)
        return answer

    def _batcher(self, model: LoadedModel) -> Batcher:
        batcher = self._batchers.get(model)
        if batcher is None:
            batcher = Batcher(
                functools.partial(self._predict_batch, weakref.ref(model)),
                max_batch_size=model.spec.max_batch_size,
                max_delay_seconds=model.spec.max_batch_delay_ms / 1000,
            )
            self._batchers[model] = batcher
        return batcher

    async def _predict_batch(
        self, model_ref: weakref.ref[LoadedModel], inputs: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], float]:
        model = model_ref()
        if model is None:  # cannot be: the batch's requests hold their model
            raise RuntimeError("the batched version was unloaded while its batch waited")
        if self.threads is None:
            return _timed_predict((model, inputs))
        key = (model.spec.model_id, model.spec.version)
        return await self.threads.run(_timed_predict, (model, inputs), key=key)

    async def _begin(
        self, model_id: str, version: str | None, routing_key: str | None
    ) -> tuple[str, LoadedModel]:
        try:
            return self.dispatcher.begin(model_id, version, routing_key)
        except (UnknownModel, NotServing):
            await self._refuse(model_id, version)
            raise

    async def _refuse(self, model_id: str, version: str | None) -> None:
        """Raise the ServingError that says why this model (version) cannot answer here."""
        known = await self.dispatcher.versions.versions(model_id)
        if not known:
            if not self.backend.ready:
                raise ServingError(503, NOT_READY)
            raise ServingError(404, UNKNOWN_MODEL.format(model_id=model_id))
        if version is None:
            if not self.backend.ready:  # e.g. just started: its routed version still loads
                raise ServingError(503, NOT_READY)
            raise ServingError(503, NO_ACTIVE_VERSION.format(model_id=model_id))
        if version not in known:
            raise ServingError(404, UNKNOWN_VERSION.format(model_id=model_id, version=version))
        raise ServingError(503, VERSION_NOT_LOADED.format(model_id=model_id, version=version))

    # -- metadata and readiness -----------------------------------------------------------

    def server_ready(self) -> None:
        if not self.backend.ready:
            raise ServingError(503, NOT_READY)

    async def loaded(self, model_id: str, version: str | None) -> tuple[str, LoadedModel]:
        """The version that would answer (routed or pinned) and its model, or refuse."""
        chosen = version or self.dispatcher.router.stable(model_id)
        model = self.dispatcher.versions.loaded(model_id, chosen) if chosen else None
        if model is None:
            await self._refuse(model_id, version)
            raise ServingError(503, VERSION_NOT_LOADED.format(model_id=model_id, version=chosen))
        return chosen, model

    async def metadata(self, model_id: str, version: str | None) -> dict[str, Any]:
        _, model = await self.loaded(model_id, version)
        return {
            "name": model_id,
            "versions": sorted(await self.dispatcher.versions.versions(model_id)),
            "platform": model.platform,
            "inputs": [t.as_dict() for t in model.inputs],
            "outputs": [t.as_dict() for t in model.outputs],
        }


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(SERVER_EXTENSIONS)}


def _timed_predict(
    job: tuple[LoadedModel, Mapping[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], float]:
    """The model's outputs and its own time, measured on the thread it runs on."""
    model, inputs = job
    started = perf_counter()
    outputs = model.predict(inputs)
    return outputs, perf_counter() - started
