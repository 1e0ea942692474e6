"""Prometheus metrics, request logging and health probes.

Metrics live in a registry owned by the app (not the process-global one) so several apps in one
process (tests) never collide. Labels use the route template, so ids never become label values.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import text
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("consult_api.http")
_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hoichan_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hoichan_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )


def route_template(scope: Scope) -> str:
    """The matched route's full template (``/api/v1/cases/{case_id}``), never the concrete path.

    FastAPI reports the innermost route, whose template lacks the prefixes of the routers it was
    included through; the prefix is recovered by rendering that template with the path parameters.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None:
        return "unmatched"
    params: dict[str, object] = scope.get("path_params", {})
    rendered = _PARAM.sub(lambda m: str(params.get(m.group(1), m.group(0))), template)
    path: str = scope["path"]
    return path[: -len(rendered)] + template if rendered and path.endswith(rendered) else template


class ObservabilityMiddleware:
    """Request id, security headers, Prometheus metrics and one structured log line per request.

    Plain ASGI rather than ``@app.middleware("http")``: the decorator form wraps every request in
    extra tasks and streams, which cost most of a cached tile's time.
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, *, hsts: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                for header, value in SECURITY_HEADERS.items():
                    if header not in headers:
                        headers[header] = value
                if "content-security-policy" not in headers and _api_content(scope, headers):
                    headers["Content-Security-Policy"] = API_CSP
                if self.hsts:
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self._observe(scope, request_id, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, request_id: str, status: int, elapsed: float) -> None:
        route = route_template(scope)
        method = str(scope["method"])
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.latency.labels(method, route).observe(elapsed)
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": method,
                "route": route,
                "status": status,
                "ms": round(elapsed * 1000, 2),
            },
        )


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "SAMEORIGIN",
}


API_CSP = "default-src 'none'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
"""For data (JSON, DICOM, images): nothing in it may load or run anything, even if opened directly."""
HSTS = "max-age=31536000; includeSubDomains"
PAGE_PREFIXES = ("/viewer",)
"""Mounted apps whose pages, scripts and workers set (or need) their own policy."""
PAGE_TYPES = ("text/html", "text/javascript", "application/javascript", "text/css")


def _api_content(scope: Scope, headers: MutableHeaders) -> bool:
    """API responses get the strict policy; pages and their assets (docs, viewer, session) do not."""
    if str(scope["path"]).startswith(PAGE_PREFIXES):
        return False
    return not headers.get("content-type", "").startswith(PAGE_TYPES)


def health_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: the database and blob storage are usable")
    def readyz(request: Request, response: Response) -> dict[str, str]:
        checks = {"database": _check_database(request), "storage": _check_storage(request)}
        if any(v != "ok" for v in checks.values()):
            response.status_code = 503
        return checks

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        registry: CollectorRegistry = request.app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _check_database(request: Request) -> str:
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness: database unavailable", extra={"error": type(exc).__name__})
        return "unavailable"
    return "ok"


def _check_storage(request: Request) -> str:
    root = request.app.state.blob_store.root
    return "ok" if root.is_dir() else "unavailable"
