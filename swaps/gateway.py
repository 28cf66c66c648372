"""The V2 Open Inference Protocol over HTTP/JSON, as a bare ASGI application.

No framework and no Django on this path: a request is a path split, a body read (with
a size limit checked before it is read whole), a dict lookup for the route, a counter
bump, the model on a worker thread, and one JSON encode. Every response to an
inference names the `model_version` that answered.

| endpoint | answer |
|---|---|
| `GET /v2` | server metadata |
| `GET /v2/health/live`, `/v2/health/ready` | 200, or 503 while not ready |
| `GET /v2/models/{m}[/versions/{v}]` | model metadata |
| `GET /v2/models/{m}[/versions/{v}]/ready` | 200, or 503 while not ready |
| `POST /v2/models/{m}/infer` | the model's active version answers |
| `POST /v2/models/{m}/versions/{v}/infer` | version v answers (503 if not loaded here) |
| `GET /metrics` | Prometheus metrics (swaps/serving_metrics.py), unless turned off |

Errors are `{"error": "..."}`: 400 malformed request, 404 unknown model, version or
endpoint, 405 wrong method, 413 body too large, 503 not ready or not loaded here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import orjson

from .inference import (
    ROUTING_KEY_HEADER,
    Backend,
    Inferencer,
    ServingError,
    server_metadata,
)
from .model_threads import ModelThreads
from .serving_metrics import CONTENT_TYPE, ServingMetrics
from .v2_codec import BadRequest, decode_request, encode_response, is_byte_count

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 8 * 2**20
# Enough threads that a few hanging requests leave room for the rest; the event loop
# (health endpoints, heartbeats) never waits on them.
INFERENCE_THREADS = 8
# A body this large is decoded on a thread, not on the event loop: forty 6 MiB JSON
# bodies decoded there delayed the replica's heartbeats until the fleet counted it dead.
DECODE_ON_LOOP_BYTES = 256 * 2**10
# At most this many requests declaring a body over LARGE_BODY_BYTES are read and served
# at once; the others wait, unread (uvicorn stops reading a socket whose body nobody
# takes). Sixty such requests at once took a replica from 216 MB to 1.1 GB for good.
LARGE_BODY_BYTES = 2**20
LARGE_BODIES_AT_ONCE = 4
ROUTING_KEY = ROUTING_KEY_HEADER.encode()  # ASGI gives header names lower-cased

TOO_LARGE = "the body is larger than the {limit} bytes this server accepts"
NO_ENDPOINT = "no such endpoint: {method} {path}"
WRONG_METHOD = "{path} takes {allowed}, not {method}"

JSON_HEADERS = [(b"content-type", b"application/json")]
METRICS_HEADERS = [(b"content-type", CONTENT_TYPE.encode())]


class Gateway:
    def __init__(
        self,
        backend: Backend,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        inference_threads: int = INFERENCE_THREADS,
        on_started: Callable[[], Awaitable[object]] | None = None,
        on_stopping: Callable[[], Awaitable[object]] | None = None,
        metrics: bool = True,
    ) -> None:
        """`on_started` is awaited once the backend started; `on_stopping` at shutdown
        before the backend stops (the replica's gRPC server drains there, while its
        requests are still routed and counted)."""
        self.backend = backend
        self.dispatcher = backend.dispatcher
        self.metrics = (
            ServingMetrics(
                self.dispatcher, loads=backend if hasattr(backend, "load_failures") else None
            )
            if metrics
            else None
        )
        self.max_body_bytes = max_body_bytes
        # 0 runs the model on the event loop: measured in bench/serving.py, and unsafe
        # with a model that can hang (it would stop health answers and heartbeats).
        self.threads = ModelThreads(inference_threads) if inference_threads else None
        # What every protocol this process serves goes through (the replica's gRPC too).
        self.inference = Inferencer(backend, threads=self.threads, metrics=self.metrics)
        self._on_started = on_started
        self._on_stopping = on_stopping
        self._started = False
        self._large_bodies = asyncio.Semaphore(LARGE_BODIES_AT_ONCE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not self._started:  # a server without lifespan events (daphne)
            await self.start()
        try:
            status, body, headers = await self._handle(scope, receive)
        except ServingError as exc:
            status, body, headers = exc.status, _error(exc.message), JSON_HEADERS
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.backend.start()
        if self._on_started is not None:
            await self._on_started()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._on_stopping is not None:
                    await self._on_stopping()
                await self.backend.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing ------------------------------------------------------------------------

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list]:
        method, path = scope["method"], scope["path"].rstrip("/")
        if path == "/metrics" and self.metrics is not None:
            _allow(method, "GET", path)
            return 200, self.metrics.exposition(), METRICS_HEADERS
        parts = path.split("/")  # "", "v2", ...
        if parts[:2] != ["", "v2"]:
            raise ServingError(404, NO_ENDPOINT.format(method=method, path=path))
        rest = parts[2:]
        if rest and rest[0] == "models" and len(rest) >= 2:
            model_id, rest = rest[1], rest[2:]
            version = None
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = rest[1], rest[2:]
            if rest == ["infer"]:
                _allow(method, "POST", path)
                return await self._infer(scope, receive, model_id, version)
            if rest == []:
                _allow(method, "GET", path)
                return _json(200, await self.inference.metadata(model_id, version))
            if rest == ["ready"]:
                _allow(method, "GET", path)
                chosen, _ = await self.inference.loaded(model_id, version)
                return _json(200, {"name": model_id, "version": chosen, "ready": True})
        elif rest == []:
            _allow(method, "GET", path)
            return _json(200, server_metadata())
        elif rest == ["health", "live"]:
            _allow(method, "GET", path)
            return _json(200, {"live": True})
        elif rest == ["health", "ready"]:
            _allow(method, "GET", path)
            self.inference.server_ready()
            return _json(200, {"ready": True})
        raise ServingError(404, NO_ENDPOINT.format(method=method, path=path))

    # -- inference ----------------------------------------------------------------------

    async def _infer(
        self, scope: Scope, receive: Receive, model_id: str, version: str | None
    ) -> tuple[int, bytes, list]:
        declared = _declared_length(scope)
        # One refused as too large (413, at once) never waits for a large body's turn.
        if declared is not None and LARGE_BODY_BYTES < declared <= self.max_body_bytes:
            async with self._large_bodies:
                return await self._infer_body(scope, receive, model_id, version, declared)
        return await self._infer_body(scope, receive, model_id, version, declared)

    async def _infer_body(
        self,
        scope: Scope,
        receive: Receive,
        model_id: str,
        version: str | None,
        declared: int | None,
    ) -> tuple[int, bytes, list]:
        started = perf_counter()
        try:
            body = await self._read_body(receive, declared)
            header_length = _header(scope, b"inference-header-content-length")
            if len(body) > DECODE_ON_LOOP_BYTES:
                request = await asyncio.to_thread(decode_request, body, header_length=header_length)
            else:
                request = decode_request(body, header_length=header_length)
        except BadRequest as exc:
            self.inference.refused(400)
            raise ServingError(400, exc.message) from None
        except ServingError as refusal:
            self.inference.refused(refusal.status)
            raise

        def encode(chosen, outputs):
            return encode_response(
                model_id=model_id, version=chosen, request=request, outputs=outputs
            )

        payload, json_length = await self.inference.infer(
            model_id,
            version,
            request,
            encode,
            started=started,
            routing_key=_header(scope, ROUTING_KEY),
        )
        if json_length is None:
            return 200, payload, JSON_HEADERS
        return (
            200,
            payload,
            [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(json_length).encode()),
            ],
        )

    async def _read_body(self, receive: Receive, declared: int | None) -> bytes:
        """The whole body, refused with 413 as soon as it is known to be too large
        (`declared`: its Content-Length, if it gave a valid one)."""
        limit = self.max_body_bytes
        if declared is not None and declared > limit:
            raise ServingError(413, TOO_LARGE.format(limit=limit))
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body", False) and len(body) <= limit:
            return body
        chunks, size = [body], len(body)
        while message.get("more_body", False):
            if size > limit:
                raise ServingError(413, TOO_LARGE.format(limit=limit))
            message = await receive()
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ServingError(413, TOO_LARGE.format(limit=limit))
        return b"".join(chunks)


def mount(
    fallback: Callable,
    *,
    backend: Backend,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    prefix: str = "/v2",
) -> Callable:
    """An ASGI app that sends HTTP paths under `prefix` to a gateway, the rest to `fallback`.

    How the console process (hotswap_site/asgi.py) serves /v2 beside Django.
    """
    # No serving metrics here: this process's /metrics is the control plane's (Django),
    # and the fleet's replicas are `python -m swaps.replica` processes, which have them.
    gateway = Gateway(backend, max_body_bytes=max_body_bytes, metrics=False)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == prefix or path.startswith(prefix + "/")):
            await gateway(scope, receive, send)
        else:
            await fallback(scope, receive, send)

    app.gateway = gateway  # type: ignore[attr-defined]
    return app


def _allow(method: str, allowed: str, path: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise ServingError(405, WRONG_METHOD.format(path=path, allowed=allowed, method=method))


def _declared_length(scope: Scope) -> int | None:
    declared = _header(scope, b"content-length")
    return int(declared) if declared is not None and is_byte_count(declared) else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _json(status: int, document: dict[str, Any]) -> tuple[int, bytes, list]:
    return status, orjson.dumps(document), JSON_HEADERS


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})
