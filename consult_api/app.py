"""The application factory. Nothing is built at import: engines, stores and metrics are made in
``create_app``/lifespan and handed out through ``app.state``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consult_api import __version__
from consult_api.auth.router import router as auth_router
from consult_api.auth.security import set_password_policy
from consult_api.cases.router import router as cases_router
from consult_api.config import Mode, Settings
from consult_api.db import create_db_engine, create_session_factory
from consult_api.dicom.api_router import router as dicom_api_router
from consult_api.dicom.router import router as dicomweb_router
from consult_api.errors import HoichanError, TooManyRequests, Unauthenticated
from consult_api.exports.router import router as exports_router
from consult_api.facilities.router import router as facilities_router
from consult_api.findings.router import router as findings_router
from consult_api.heap import freeze_startup_heap, hand_off_quickly
from consult_api.observability import HttpMetrics, ObservabilityMiddleware, health_router
from consult_api.opinions.router import router as opinions_router
from consult_api.sessions.providers import build_provider
from consult_api.sessions.router import router as sessions_router
from consult_api.sessions.signaling import SignalingHub
from consult_api.slides.router import router as slides_router
from consult_api.storage.blobs import LocalBlobStore
from consult_api.triage.router import router as triage_router
from consult_api.uploads.router import router as uploads_router
from consult_api.users.router import router as users_router

log = logging.getLogger("consult_api")
PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document."""
    body = {
        "type": f"about:blank#{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


class Problem(BaseModel):
    """An RFC 9457 problem document, the body of every error response."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses answered as problem documents."""
    return {
        code: {
            "model": Problem,
            "description": "Checksum mismatch" if code == 460 else HTTPStatus(code).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code in codes
    }


ERROR_RESPONSES = problem_responses(400, 401, 403, 404, 409, 413, 422)
"""What any API route may answer through the shared error handlers."""
STREAM_ERROR_RESPONSES = problem_responses(400, 401, 403, 404, 406, 409, 412, 413, 415, 422, 460, 507)
"""DICOMweb and tus also negotiate types and versions, check checksums and write blobs."""


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HoichanError)
    async def domain_error(_request: Request, exc: HoichanError) -> JSONResponse:
        response = problem(exc.status_code, exc.title, exc.detail, **exc.extra)
        if isinstance(exc, Unauthenticated):
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(400, "Malformed JSON", "the request body is not valid JSON", errors=errors)
        return problem(422, "Invalid input", "the request does not match the schema", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, _title_for(exc.status_code), str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        """A lost or refused database connection (restart, failover) is temporary: 503, retry."""
        if not (isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated):
            return await unexpected_error(request, exc)
        log.warning(
            "database unavailable", extra={"error": type(exc.orig).__name__, "method": request.method}
        )
        response = problem(503, "Service unavailable", "the database is unavailable; retry shortly")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled error", extra={"error": type(exc).__name__, "method": request.method}, exc_info=exc
        )
        return problem(500, "Internal server error", "an unexpected error occurred; it has been logged")


def _title_for(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


STREAMING_PREFIXES = ("/dicom-web/", "/uploads")
"""Routes that stream bodies to disk and enforce their own, larger limits as bytes arrive."""


class BodyLimitMiddleware:
    """Refuse declared bodies over the limit before reading them (plain ASGI, no per-request tasks).

    Streaming routes enforce their own, larger limits as bytes arrive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not str(scope["path"]).startswith(STREAMING_PREFIXES):
            declared = Headers(scope=scope).get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_bytes:
                response = problem(
                    413, "Payload too large", f"request bodies are limited to {self.max_bytes} bytes"
                )
                await response(scope, receive, send)
                return
            if declared is None:
                body = await self._read_within_limit(receive)
                if body is None:
                    too_large = problem(
                        413, "Payload too large", f"request bodies are limited to {self.max_bytes} bytes"
                    )
                    await too_large(scope, receive, send)
                    return
                receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _read_within_limit(self, receive: Receive) -> bytes | None:
        """An undeclared (chunked) body, read up to the limit; None once it goes past it."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the app the body already read, then the connection's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def api_router() -> APIRouter:
    from consult_api.fhir.router import router as fhir_router

    api = APIRouter(prefix="/api/v1")
    for router in (
        fhir_router,
        slides_router,
        auth_router,
        users_router,
        facilities_router,
        cases_router,
        opinions_router,
        dicom_api_router,
        exports_router,
        sessions_router,
        findings_router,
        triage_router,
    ):
        api.include_router(router)
    return api


TUS_REQUEST_HEADERS = (
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Checksum",
    "Upload-Defer-Length",
    "X-HTTP-Method-Override",
)
TUS_RESPONSE_HEADERS = (
    "Location",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Slide-Location",
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_db_engine(
            settings.resolved_database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )
        app.state.engine = engine
        app.state.session_factory = create_session_factory(engine)
        app.state.blob_store = LocalBlobStore(settings.blob_dir)
        app.state.media_provider = build_provider(settings)
        app.state.signaling_hub = SignalingHub()
        if settings.warm_start:
            # FastAPI builds each included router's route table (a pydantic adapter per parameter)
            # on the first request that reaches it; building the OpenAPI schema walks every route,
            # mounted ones included, so that is paid here, before the server takes requests.
            hand_off_quickly()
            app.openapi()
        if settings.freeze_heap:
            freeze_startup_heap()  # after the warm start: its route tables are long-lived too
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="Hoichan consult API",
        version=__version__,
        description="Tele-consultation between referring facilities and upper-tier specialists.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    set_password_policy(settings.password_policy)
    app.state.metrics = HttpMetrics()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(
        ObservabilityMiddleware, metrics=app.state.metrics, hsts=settings.mode is Mode.production
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", *TUS_REQUEST_HEADERS],
            # A viewer on another origin (``hoichan viewer --api URL``) resumes uploads with
            # tus-js-client, which must read these; DICOMweb clients read Content-Location.
            expose_headers=[*TUS_RESPONSE_HEADERS, "Content-Location", "Retry-After"],
        )
    app.include_router(health_router())
    app.include_router(api_router(), responses=ERROR_RESPONSES)
    app.include_router(uploads_router, responses=STREAM_ERROR_RESPONSES)
    app.include_router(dicomweb_router, responses=STREAM_ERROR_RESPONSES)
    return app
