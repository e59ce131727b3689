"""The web application of ``adcore serve`` (Starlette): predict, health, readiness, metrics and a page.

Every failure a client can cause is a 4xx JSON ``{"error": ..., "status": ...}``
naming the problem, and the server goes on serving. The model loads and warms
up on a thread after startup, so ``/healthz`` answers at once and ``/readyz``
says when predictions can be made.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import ProcessCollector
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from adcore.serve import DEFAULT_MAX_BYTES
from adcore.serve.scoring import BadImage, Scorer

__all__ = ["RAW_TYPE", "create_app"]

#: Content type of a raw body that is not image/*: bytes whose kind the decoder finds out.
RAW_TYPE = "application/octet-stream"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
Loader = Callable[[], tuple[Any, dict[str, Any]]]


class TooLarge(Exception):
    """The request body passed the size limit."""


class _Metrics:
    """Prometheus series of one app (its own registry: two apps in a process never share counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter("adcore_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("adcore_request_errors", "Requests answered with an error, by status",
                              ["status"], registry=self.registry)
        self.latency = Histogram("adcore_predict_latency_seconds", "Time to answer POST /predict (successes)",
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.ready = Gauge("adcore_model_ready", "1 once the model is loaded and warmed up", registry=self.registry)


class _LimitBody:
    """ASGI middleware refusing bodies over ``limit`` bytes: by Content-Length at once, else while reading."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            message = (f"request body of {int(declared):,} bytes is over the limit of {self.limit:,} bytes"
                       if declared.isdigit() else "invalid Content-Length header")
            status = 413 if declared.isdigit() else 400
            await JSONResponse({"error": message, "status": status}, status)(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge
            return message

        await self.app(scope, counted, send)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status)


def create_app(load: Loader, engine: str, max_bytes: int = DEFAULT_MAX_BYTES,
               on_load_error: Callable[[BaseException], None] | None = None,
               on_ready: Callable[[str], None] | None = None) -> Any:
    """The ASGI app; ``load()`` returns (model, metadata) and runs on a thread after startup.

    ``on_load_error`` gets the exception when loading fails; ``on_ready`` a line once the model is warm.
    """
    metrics = _Metrics()
    state: dict[str, Any] = {"scorer": None, "error": None}
    page = resources.files("adcore.serve").joinpath("page.html").read_text(encoding="utf-8")

    def load_and_warm(scratch: Path) -> None:
        started = time.perf_counter()
        try:
            model, meta = load()
            scorer = Scorer(model, meta, engine, scratch)
            scorer.warm_up()
        except BaseException as exc:  # reported by readyz and the CLI; the thread must not die silently
            state["error"] = " ".join(str(exc).split()) or type(exc).__name__
            if on_load_error is not None:
                on_load_error(exc)
            return
        state["scorer"] = scorer
        metrics.ready.set(1)
        if on_ready is not None:
            on_ready(f"Model ready: {model.name} ({engine}), loaded and warmed up in "
                     f"{time.perf_counter() - started:.1f} s")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with tempfile.TemporaryDirectory(prefix="adcore-serve-") as scratch:
            threading.Thread(target=load_and_warm, args=(Path(scratch),), name="adcore-load", daemon=True).start()
            yield

    async def predict(request: Request) -> Response:
        scorer: Scorer | None = state["scorer"]
        if scorer is None:
            return _error(503, state["error"] or "the model is still loading; see GET /readyz")
        start = time.perf_counter()
        try:
            data = await _image_bytes(request)
            answer = await anyio.to_thread.run_sync(scorer.score, data, request.query_params.get("map") != "0")
        except BadImage as exc:
            return _error(exc.status, str(exc))
        except TooLarge:
            return _error(413, f"request body is over the limit of {max_bytes:,} bytes")
        metrics.latency.observe(time.perf_counter() - start)
        return JSONResponse(answer)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"alive": True})

    async def readyz(request: Request) -> Response:
        scorer: Scorer | None = state["scorer"]
        if scorer is None:
            return JSONResponse({"ready": False, "error": state["error"]}, 503)
        return JSONResponse({"ready": True, "model": scorer.info})

    async def metrics_page(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error ({type(exc).__name__}); the server goes on serving")

    routes = [Route("/predict", predict, methods=["POST"]), Route("/healthz", healthz), Route("/readyz", readyz),
              Route("/metrics", metrics_page), Route("/", index)]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    return _Counted(_LimitBody(app, max_bytes), metrics)


async def _image_bytes(request: Request) -> bytes:
    """The image of a raw body (an image content type) or of a multipart form (its first file)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            async with request.form(max_files=1, max_fields=16) as form:
                files = [v for v in form.values() if isinstance(v, UploadFile)]
                if not files:
                    raise BadImage(400, "the multipart form holds no file; send the image as a file field")
                return await files[0].read()
        except HTTPException as exc:
            raise BadImage(400, f"malformed multipart form: {exc.detail}") from None
    if not (kind.startswith("image/") or kind == RAW_TYPE):
        raise BadImage(415, f"content type {kind or '(none)'!r} is not an image; send the image as the body "
                            f"with an image/* type (or {RAW_TYPE}) or as multipart/form-data")
    return await request.body()


class _Counted:
    """ASGI middleware counting every response by endpoint and status (unknown paths pooled as 'other')."""

    def __init__(self, app: Any, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in ("/", "/predict", "/healthz", "/readyz", "/metrics") else "other"

        async def counting(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.metrics.requests.labels(endpoint, str(status)).inc()
                if status >= 400:
                    self.metrics.errors.labels(str(status)).inc()
            await send(message)

        await self.app(scope, receive, counting)
