"""The V2 inference protocol over gRPC (`inference.GRPCInferenceService`), beside REST.

A replica serves it on its own port (`--grpc-port`, HOTSWAP_GRPC_PORT) with grpcio's
asyncio server on the event loop uvicorn runs: a request goes through the same
`Inferencer` as REST (swaps/inference.py), so the same routing, in-flight counts,
drain, errors and metrics, with no lock between the two protocols.

- Inputs come as `raw_input_contents` (one little-endian blob per input, what
  tritonclient sends) or as typed `contents`; outputs go back raw when the request's
  inputs were raw, typed otherwise.
- A refusal's HTTP status maps to a gRPC code (`GRPC_CODES`); its message is REST's.
- `grpc.health.v1` says SERVING only while the replica is ready, and NOT_SERVING from
  the moment it starts draining at shutdown (it keeps answering while the inferences
  running finish; new ones are refused with UNAVAILABLE, as a closed REST port would).
- Requests are counted in `hotswap_inference_requests_total` as REST's are, under the
  HTTP status REST would have answered (no protocol label: one dict lookup per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from time import perf_counter

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .engine.tensors import numpy_dtype, v2_datatype
from .inference import ROUTING_KEY_HEADER, Inferencer, ServingError, server_metadata
from .v2_codec import (
    BadRequest,
    InferenceRequest,
    RequestedOutput,
    answered_outputs,
    checked_datatype,
    checked_shape,
    from_bytes,
    shaped,
    to_bytes,
)
from .v2_grpc import grpc_predict_v2_pb2 as pb
from .v2_grpc import grpc_predict_v2_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
# The typed `contents` field each datatype travels in (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# How often a health Watch stream is told of a change in readiness; Check always
# answers from the replica's state at the time.
HEALTH_POLL_SECONDS = 0.2

RAW_COUNT = "the request has {raw} raw_input_contents for {inputs} inputs: one per input"
RAW_AND_TYPED = "input {name!r} has both raw_input_contents and typed contents"
SHUTTING_DOWN = "this replica is shutting down: send it to another one"
NO_CONTENTS_FIELD = "input {name!r} is {datatype}, which travels only as raw_input_contents"


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, inference: Inferencer) -> None:
        self.inference = inference
        # Draining: new inferences are refused (UNAVAILABLE), those running finish.
        self.draining = False
        self.running = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.inference.backend.ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**server_metadata())

    async def ModelReady(self, request, context):
        try:
            await self.inference.loaded(request.name, request.version or None)
        except ServingError as exc:
            if exc.status == 503:  # known, not (yet) loaded here: not ready
                return pb.ModelReadyResponse(ready=False)
            await _abort(context, exc)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request, context):
        try:
            document = await self.inference.metadata(request.name, request.version or None)
        except ServingError as exc:
            await _abort(context, exc)
        return pb.ModelMetadataResponse(
            name=document["name"],
            versions=document["versions"],
            platform=document["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in document["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in document["outputs"]],
        )

    async def ModelInfer(self, request, context):
        started = perf_counter()
        if self.draining:
            self.inference.refused(503)
            await _abort(context, ServingError(503, SHUTTING_DOWN))
        self.running += 1
        self.idle.clear()
        try:
            return await self._infer(request, context, started)
        finally:
            self.running -= 1
            if not self.running:
                self.idle.set()

    async def _infer(self, request, context, started: float):
        model_id = request.model_name
        try:
            decoded = decode_request(request)
        except BadRequest as exc:
            self.inference.refused(400)
            await _abort(context, ServingError(400, exc.message))
        raw = bool(request.raw_input_contents)

        def encode(chosen: str, outputs: Mapping[str, np.ndarray]) -> pb.ModelInferResponse:
            return encode_response(
                model_id=model_id, version=chosen, request=decoded, outputs=outputs, raw=raw
            )

        try:
            return await self.inference.infer(
                model_id,
                request.model_version or None,
                decoded,
                encode,
                started=started,
                routing_key=_routing_key(context),
            )
        except ServingError as exc:
            await _abort(context, exc)


def _routing_key(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == ROUTING_KEY_HEADER:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


async def _abort(context: grpc.aio.ServicerContext, error: ServingError) -> None:
    await context.abort(GRPC_CODES.get(error.status, grpc.StatusCode.UNKNOWN), error.message)


# -- messages <-> tensors ---------------------------------------------------------------------


def decode_request(request: pb.ModelInferRequest) -> InferenceRequest:
    """The request's tensors as numpy arrays, checked as REST's are; BadRequest if not."""
    if not request.inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(RAW_COUNT.format(raw=len(raw), inputs=len(request.inputs)))
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for position, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise BadRequest(f"input {position} needs a 'name'")
        if name in inputs:
            raise BadRequest(f"input {name!r} appears twice")
        datatype = checked_datatype(tensor.datatype, name)
        shape = checked_shape(list(tensor.shape), name)
        if raw:
            if tensor.HasField("contents"):
                raise BadRequest(RAW_AND_TYPED.format(name=name))
            flat = from_bytes(raw[position], datatype, name)
        else:
            flat = _from_contents(tensor.contents, datatype, name)
        inputs[name], datatypes[name] = shaped(flat, shape, name), datatype
    wanted = [RequestedOutput(o.name, None) for o in request.outputs] or None
    return InferenceRequest(
        id=request.id or None, inputs=inputs, datatypes=datatypes, outputs=wanted
    )


def _from_contents(contents: pb.InferTensorContents, datatype: str, name: str) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(NO_CONTENTS_FIELD.format(name=name, datatype=datatype))
    values = getattr(contents, field)
    if datatype == "BYTES":
        return np.array(list(values), dtype=np.object_)
    target = numpy_dtype(datatype)
    # The narrower integers travel in 32-bit fields: read them wide, check, then narrow.
    wide = np.dtype(np.int64) if field in ("int_contents", "uint_contents") else target
    array = np.array(values, dtype=wide)
    if wide != target and array.size:
        limits = np.iinfo(target)
        if array.min() < limits.min or array.max() > limits.max:
            raise BadRequest(f"contents of input {name!r} hold values out of range for {datatype}")
    return array.astype(target, copy=False)


def encode_response(
    *,
    model_id: str,
    version: str,
    request: InferenceRequest,
    outputs: Mapping[str, np.ndarray],
    raw: bool,
) -> pb.ModelInferResponse:
    """The reply: raw outputs if `raw` (the request's inputs were raw), else typed.

    Raw contents pair with outputs by position, so a reply is all raw or all typed: all
    raw when an output is FP16, which no typed field holds."""
    response = pb.ModelInferResponse(
        model_name=model_id, model_version=version, id=request.id or ""
    )
    tensors = []
    for name, _ in answered_outputs(request, outputs):
        array = np.asarray(outputs[name])
        tensors.append((name, array, v2_datatype(array.dtype)))
    raw = raw or any(datatype == "FP16" for _, _, datatype in tensors)
    for name, array, datatype in tensors:
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(to_bytes(array, datatype))
        else:
            _to_contents(tensor.contents, array, datatype)
    return response


def _to_contents(contents: pb.InferTensorContents, array: np.ndarray, datatype: str) -> None:
    values = getattr(contents, CONTENTS_FIELD[datatype])
    flat = array.ravel()
    if datatype == "BYTES":
        values.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    else:
        values.extend(flat.tolist())


# -- the server -------------------------------------------------------------------------------


class ReplicaHealth(health.aio.HealthServicer):
    """grpc.health.v1 for the whole server ("") and the inference service: SERVING only
    while the replica is ready."""

    def __init__(self, inference: Inferencer) -> None:
        super().__init__()
        self._inference = inference
        self._status: int | None = None

    async def refresh(self) -> None:
        if self._gracefully_shutting_down:
            return
        ready = self._inference.backend.ready
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if status != self._status:
            self._status = status
            for service in ("", SERVICE):
                await self.set(service, status)

    async def Check(self, request, context):
        await self.refresh()
        return await super().Check(request, context)


class GrpcGateway:
    """The gRPC server of one replica; start and stop it on the loop that serves REST."""

    def __init__(
        self,
        inference: Inferencer,
        *,
        host: str,
        port: int,
        max_message_bytes: int,
        max_concurrent_rpcs: int | None = None,
        grace_seconds: float = 30.0,
    ) -> None:
        self.inference = inference
        self.address = f"{host}:{port}"
        self.max_message_bytes = max_message_bytes
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.grace_seconds = grace_seconds
        self._server: grpc.aio.Server | None = None
        self._servicer: Servicer | None = None
        self._health: ReplicaHealth | None = None
        self._watch: asyncio.Task | None = None
        self._stopping: asyncio.Task | None = None

    async def start(self) -> None:
        # A request over the REST body limit is refused the same way, before any decoding
        # (grpc answers RESOURCE_EXHAUSTED); beyond max_concurrent_rpcs, too.
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=self.max_concurrent_rpcs,
        )
        self._servicer = Servicer(self.inference)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self._servicer, self._server)
        self._health = ReplicaHealth(self.inference)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        await self._health.refresh()
        self._server.add_insecure_port(self.address)
        await self._server.start()
        self._watch = asyncio.create_task(self._follow_readiness(), name="grpc health")

    def begin_stopping(self) -> None:
        """Start draining, without waiting (`stop` waits): health says NOT_SERVING at
        once and keeps answering, new inferences are refused with UNAVAILABLE, and those
        running finish (for up to `grace_seconds`) before the server stops."""
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self._drain())

    async def stop(self) -> None:
        self.begin_stopping()
        if self._stopping is not None:
            await asyncio.shield(self._stopping)

    async def _drain(self) -> None:
        assert self._server is not None and self._health is not None
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        assert self._servicer is not None
        self._servicer.draining = True
        await self._health.enter_graceful_shutdown()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace_seconds):
                await self._servicer.idle.wait()
        await self._server.stop(1.0)

    async def _follow_readiness(self) -> None:
        assert self._health is not None
        while True:
            await asyncio.sleep(HEALTH_POLL_SECONDS)
            try:
                await self._health.refresh()
            except Exception:  # a bug here must not end the health answers for good
                log.exception("could not refresh the gRPC health status")
