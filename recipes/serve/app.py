"""The Starlette application of `stenograph serve`.

Routes:
- ``GET /``: the live-captions page (package data, no CDN); ``/static/*`` its files
- ``GET /healthz``: 200 ``{"status": "ok", ...}`` once the model is loaded and warmed up,
  503 ``{"status": "loading"}`` (or ``"error"``) before
- ``GET /v1/models``: the model, in OpenAI's list shape
- ``POST /v1/audio/transcriptions``: OpenAI's transcription API (see `responses`)
- ``WS /v1/stream``: live transcription (see `sessions`)
- ``GET /metrics``: Prometheus metrics (see `metrics`)

With an API key, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer KEY``
(401 otherwise); ``/``, ``/static`` and ``/healthz`` stay open. Every request body
is capped at ``max_upload_mb`` (413) and must arrive within ``upload_timeout`` seconds
(408). At most ``max_queue`` transcription requests are in flight; more get 503 with
``Retry-After``. Inference runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from .batching import QueueFullError
from .metrics import CONTENT_TYPE_LATEST, ServeMetrics
from .responses import GRANULARITIES, RESPONSE_FORMATS, error_response, transcription_response
from .service import AudioError, SpeechService, prompt_hotwords
from .sessions import SessionRegistry, StreamSession, key_matches

_log = logging.getLogger("stenograph")

STATIC_DIR = Path(str(resources.files("stenograph.recipes.serve") / "static"))
PROTECTED_PREFIXES = ("/v1/", "/metrics")
TRANSCRIPTIONS = "/v1/audio/transcriptions"
#: Seconds a client is told to wait when the queue is full / the model is loading.
RETRY_AFTER_BUSY, RETRY_AFTER_LOADING = 1, 5


class BodyTooLargeError(Exception):
    """The request body exceeds the upload limit."""


class UploadTimeoutError(Exception):
    """The request body did not arrive within the upload timeout."""


class ServeMiddleware:
    """Metrics for every request; auth, body size and upload-time limits for HTTP.

    A pure ASGI middleware: it wraps `receive`, so the limits hold however the body
    is read (multipart parser, streaming), and chunked bodies are counted too.
    """

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serves one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_and_watch)
            else:
                await self.app(scope, self._limited(receive), send_and_watch)
        finally:
            self.state.metrics.record_request(
                scope["path"], scope["method"], status, time.perf_counter() - started
            )

    def _refusal(self, scope: Scope) -> Response | None:
        settings = self.state.service.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        protected = settings.api_key and scope["path"].startswith(PROTECTED_PREFIXES)
        if protected and not key_matches(headers.get("authorization"), settings.api_key):
            return error_response(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                error_type="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_upload_bytes:
            return _too_large(settings.max_upload_mb)
        return None

    def _limited(self, receive: Receive) -> Receive:
        settings = self.state.service.settings
        deadline = time.monotonic() + settings.upload_timeout
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: later reads only wait for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise UploadTimeoutError() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > settings.max_upload_bytes:
                    raise BodyTooLargeError()
            return message

        return limited_receive


def _too_large(limit_mb: float) -> Response:
    return error_response(
        413, f"the request body is larger than the server's limit of {limit_mb:g} MB", "file"
    )


class ServerState:
    """What the routes share: service, metrics, stream registry, in-flight count."""

    def __init__(self, service: SpeechService, metrics: ServeMetrics) -> None:
        self.service = service
        self.metrics = metrics
        settings = service.settings
        self.streams = SessionRegistry(settings.max_streams, metrics.streams)
        self.in_flight = 0
        self.limiter = anyio.CapacityLimiter(settings.max_queue + settings.max_streams)


# ---------------------------------------------------------------------------
# Routes


async def index(request: Request) -> Response:
    """The live-captions page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


async def healthz(request: Request) -> Response:
    """Ready (200) only once the model is loaded and warmed up."""
    service: SpeechService = request.app.state.server.service
    if service.ready:
        return JSONResponse(
            {
                "status": "ok",
                "model": service.name,
                "sample_rate": service.sample_rate,
                "mode": service.mode,
                "decoder": service.decoder_description,
                "auth": bool(service.settings.api_key),
                "max_upload_mb": service.settings.max_upload_mb,
            }
        )
    status = "error" if service.error else "loading"
    body = {"status": status, "auth": bool(service.settings.api_key)}
    if service.error:
        body["error"] = service.error
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_LOADING)})


async def models(request: Request) -> Response:
    """The served model in OpenAI's `/v1/models` shape."""
    service: SpeechService = request.app.state.server.service
    entry = {"id": service.name, "object": "model", "created": 0, "owned_by": "stenograph"}
    return JSONResponse({"object": "list", "data": [entry]})


async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    server: ServerState = request.app.state.server
    server.metrics.queue_length.set(server.in_flight)
    return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def transcriptions(request: Request) -> Response:
    """`POST /v1/audio/transcriptions` (OpenAI-compatible)."""
    server: ServerState = request.app.state.server
    service = server.service
    if not service.ready:
        return error_response(
            503,
            "the model is still loading; retry shortly",
            error_type="server_error",
            headers={"Retry-After": str(RETRY_AFTER_LOADING)},
        )
    if server.in_flight >= service.settings.max_queue:
        server.metrics.rejected.inc()
        return _busy(f"server busy: {server.in_flight} transcription requests are in flight")
    server.in_flight += 1
    server.metrics.queue_length.set(server.in_flight)
    try:
        return await _transcribe_request(request, server)
    finally:
        server.in_flight -= 1
        server.metrics.queue_length.set(server.in_flight)


def _busy(message: str) -> Response:
    return error_response(
        503, message, error_type="server_error", headers={"Retry-After": str(RETRY_AFTER_BUSY)}
    )


async def _transcribe_request(request: Request, server: ServerState) -> Response:
    service = server.service
    try:
        form = await request.form(max_files=1, max_fields=32)
    except BodyTooLargeError:
        return _too_large(service.settings.max_upload_mb)
    except UploadTimeoutError:
        return error_response(
            408,
            f"the request body did not arrive within {service.settings.upload_timeout:g} s",
        )
    options = _request_options(form)
    if isinstance(options, Response):
        return options
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return error_response(
            400, "no file: send the audio as the multipart form field 'file'", "file"
        )
    name = Path(upload.filename or "upload").name or "upload"
    hotwords = prompt_hotwords(options["prompt"], service.model.vocabulary.tokens)
    path = await anyio.to_thread.run_sync(_save_upload, upload)
    try:
        if os.path.getsize(path) == 0:
            return error_response(400, f"the file {name!r} is empty (0 bytes)", "file")
        transcript = await anyio.to_thread.run_sync(
            service.transcribe_file, path, name, hotwords, limiter=server.limiter
        )
    except AudioError as error:
        return error_response(400, f"cannot transcribe {name!r}: {error}", "file")
    except QueueFullError as error:
        server.metrics.rejected.inc()
        return _busy(f"server busy: {error}")
    finally:
        await upload.close()
        os.unlink(path)
    server.metrics.audio_seconds.labels(TRANSCRIPTIONS).inc(transcript.duration)
    return transcription_response(
        transcript, options["response_format"], options["granularities"], options["language"]
    )


def _request_options(form: Any) -> dict[str, Any] | Response:
    """The form's options, checked; an error response names the first bad one."""
    response_format = str(form.get("response_format") or "json")
    if response_format not in RESPONSE_FORMATS:
        return error_response(
            400,
            f"unknown response_format {response_format!r}; use one of {list(RESPONSE_FORMATS)}",
            "response_format",
        )
    granularities = [
        str(g)
        for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    ]
    unknown = sorted(set(granularities) - set(GRANULARITIES))
    if unknown:
        return error_response(
            400,
            f"unknown timestamp_granularities {unknown}; use {list(GRANULARITIES)}",
            "timestamp_granularities",
        )
    if str(form.get("stream") or "false").lower() in ("true", "1"):
        return error_response(
            400, "stream=true is not supported here; use the WebSocket /v1/stream", "stream"
        )
    language = form.get("language")
    return {
        "response_format": response_format,
        "granularities": granularities,
        "prompt": str(form.get("prompt") or ""),
        "language": str(language) if language else None,
    }


def _save_upload(upload: UploadFile) -> str:
    """Copies an upload to a named temporary file (the decoders read paths); returns it."""
    suffix = Path(upload.filename or "").suffix.lower()[:8]
    handle, path = tempfile.mkstemp(prefix="stenograph-upload-", suffix=suffix)
    with os.fdopen(handle, "wb") as target:
        upload.file.seek(0)
        while chunk := upload.file.read(1 << 20):
            target.write(chunk)
    return path


async def stream(websocket: WebSocket) -> None:
    """`WS /v1/stream` (see `sessions`)."""
    server: ServerState = websocket.app.state.server
    service = server.service
    started = time.perf_counter()
    session = StreamSession(
        websocket,
        service,
        server.streams,
        service.settings.api_key,
        service.settings.stream_idle_timeout,
        server.limiter,
    )
    if not service.ready:
        await websocket.accept()
        await websocket.send_json({"type": "error", "error": "the model is still loading"})
        await websocket.close(1013)
        return
    try:
        await session.run()
    finally:
        server.metrics.audio_seconds.labels("/v1/stream").inc(session.audio_seconds)
        server.metrics.record_request(
            "/v1/stream", "WS", session.close_code, time.perf_counter() - started
        )


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, str(error.detail), headers=error.headers)


async def _server_error(request: Request, error: Exception) -> Response:
    _log.exception("serve: %s %s failed", request.method, request.url.path, exc_info=error)
    return error_response(500, f"internal error: {type(error).__name__}", error_type="server_error")


# ---------------------------------------------------------------------------
# The application


def create_app(
    service: SpeechService,
    load_in_background: bool = True,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> Starlette:
    """Builds the app around a service.

    Args:
        service: The speech service (loaded or not).
        load_in_background: Load an unloaded service at startup in a thread (the server
            answers `/healthz` with 503 meanwhile).
        on_load_error: Called if loading fails (the CLI stops the server).

    Returns:
        The Starlette application; `app.state.server` is its `ServerState`.
    """
    metrics_state = ServeMetrics()
    service.on_batch = metrics_state.record_batch
    server = ServerState(service, metrics_state)
    metrics_state.watch_model_queue(
        lambda: service.batcher.pending if service.batcher is not None else 0
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loader = None
        if load_in_background and not service.ready:
            loader = asyncio.create_task(_load(service, on_load_error))
        yield
        if loader is not None and not loader.done():
            loader.cancel()
        service.close()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/v1/models", models),
            Route(TRANSCRIPTIONS, transcriptions, methods=["POST"]),
            WebSocketRoute("/v1/stream", stream),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.server = server
    app.add_middleware(ServeMiddleware, state=server)
    return app


async def _load(
    service: SpeechService, on_load_error: Callable[[BaseException], None] | None
) -> None:
    try:
        await anyio.to_thread.run_sync(service.load)
    except Exception as error:  # noqa: BLE001 - reported by /healthz and the callback
        _log.error("serve: cannot load the model: %s", error)
        if on_load_error is not None:
            on_load_error(error)
