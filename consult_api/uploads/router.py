"""tus 1.0 under ``/uploads``: OPTIONS, POST (creation, creation-with-upload), HEAD, PATCH, DELETE.

Why our own router and not ``tuspyserver``: it has no checksum extension, authenticates after it
has written the body, appended at end-of-file instead of the saved offset after a crash mid-PATCH,
and has no working expiry sweep (see FIELD-NOTES). Here the caller is authenticated and the upload's
owner checked before a byte of the body is read, in a short transaction of its own (a PATCH may
stream for minutes over a slow link and must not hold a database transaction meanwhile).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from consult_api.access import Principal
from consult_api.db import transaction, utcnow
from consult_api.deps import api_key_scheme, get_principal, oauth2_scheme
from consult_api.errors import HoichanError, PayloadTooLarge, Unauthenticated
from consult_api.slides.models import Slide
from consult_api.slides.service import SlideFiles
from consult_api.uploads import service
from consult_api.uploads.errors import (
    ChecksumMismatch,
    OffsetMismatch,
    UnsupportedMediaType,
    UnsupportedVersion,
)
from consult_api.uploads.service import (
    CHECKSUM_ALGORITHMS,
    MAX_UPLOAD_BYTES,
    UPLOAD_TTL,
    BadRequest,
    Checksum,
)
from consult_api.uploads.storage import ChunkWriter, UploadInfo, UploadStore

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
OFFSET_STREAM = "application/offset+octet-stream"
FLUSH_BYTES = 1024 * 1024
SWEEP_INTERVAL_S = 60.0


class TusRoute(APIRoute):
    """Every response carries ``Tus-Resumable``, errors included (the protocol requires it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except HoichanError as exc:
                response = _problem(exc)
            response.headers["Tus-Resumable"] = TUS_VERSION
            return response

        return handler


def _problem(exc: HoichanError) -> Response:
    body = {
        "type": f"about:blank#{exc.type_slug}",
        "title": exc.title,
        "status": exc.status_code,
        "detail": exc.detail,
    }
    response = JSONResponse(
        {**body, **exc.extra}, status_code=exc.status_code, media_type="application/problem+json"
    )
    if isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _require_tus(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise UnsupportedVersion(f"send Tus-Resumable: {TUS_VERSION}", version=TUS_VERSION)


def upload_principal(
    request: Request,
    token: Annotated[str | None, Security(oauth2_scheme)],
    api_key: Annotated[str | None, Security(api_key_scheme)],
) -> Principal:
    """Authenticate before the body is read, in a transaction that ends before it is read."""
    _require_tus(request)
    with transaction(request.app.state.session_factory) as session:
        return get_principal(session, request.app.state.settings, token, api_key)


UploadPrincipal = Annotated[Principal, Depends(upload_principal)]
router = APIRouter(prefix="/uploads", tags=["uploads"], route_class=TusRoute)


def _store(request: Request) -> UploadStore:
    store: UploadStore | None = getattr(request.app.state, "upload_store", None)
    if store is None:
        store = UploadStore(request.app.state.settings.data_dir / "uploads")
        request.app.state.upload_store = store
    return store


def _sweep_now_and_then(request: Request, store: UploadStore) -> None:
    """Expired uploads are removed at most once a minute, piggy-backing on creations."""
    last: float = getattr(request.app.state, "upload_swept_at", 0.0)
    if time.monotonic() - last >= SWEEP_INTERVAL_S:
        request.app.state.upload_swept_at = time.monotonic()
        store.sweep(utcnow())


def _int_header(request: Request, name: str) -> int:
    value = request.headers.get(name, "")
    if not value.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(value)


def _upload_headers(info: UploadInfo) -> dict[str, str]:
    return {
        "Upload-Offset": str(info.offset),
        "Upload-Expires": format_datetime(info.expires_at, usegmt=True),
    }


async def _receive(request: Request, writer: ChunkWriter, limit: int) -> bool:
    """Stream the body into ``writer`` in 1 MiB writes off the event loop; False if the client left."""
    buffer = bytearray()
    try:
        async for chunk in request.stream():
            if writer.received + len(buffer) + len(chunk) > limit:
                raise PayloadTooLarge(f"the body is longer than the {limit} bytes this upload still expects")
            buffer += chunk
            if len(buffer) >= FLUSH_BYTES:
                await run_in_threadpool(writer.write, bytes(buffer))
                buffer.clear()
    except ClientDisconnect:
        return False
    finally:
        if buffer:
            await run_in_threadpool(writer.write, bytes(buffer))
    return True


async def _append(
    request: Request, store: UploadStore, upload_id: str, offset: int, checksum: Checksum | None
) -> UploadInfo:
    """One PATCH body at the committed ``offset``: committed whole, or rolled back whole.

    Without a checksum, the bytes of a body cut short by a disconnect are kept (the protocol asks
    servers to keep what they can); with one they cannot be verified, so they are dropped.
    """
    writer = await run_in_threadpool(store.writer, upload_id, checksum.algorithm if checksum else None)
    try:
        if offset != writer.info.offset:
            raise OffsetMismatch(offset, writer.info.offset)
        await run_in_threadpool(writer.begin)
        limit = min(writer.info.length - writer.info.offset, request.app.state.settings.max_request_bytes)
        try:
            finished = await _receive(request, writer, limit)
        except BaseException:
            await run_in_threadpool(writer.rollback)
            raise
        if checksum is not None and not (finished and checksum.matches(writer.digest())):
            await run_in_threadpool(writer.rollback)
            raise ChecksumMismatch(
                f"the chunk does not match its {checksum.algorithm} checksum; it was discarded"
            )
        return await run_in_threadpool(writer.commit, utcnow() + UPLOAD_TTL)
    finally:
        writer.close()


def _complete(request: Request, principal: Principal, info: UploadInfo) -> Slide:
    files = SlideFiles(request.app.state.settings.data_dir / "slides")
    with transaction(request.app.state.session_factory) as session:
        return service.complete(
            session, principal, _store(request), request.app.state.blob_store, files, info
        )


async def _finish_if_complete(
    request: Request, principal: Principal, info: UploadInfo, headers: dict[str, str]
) -> None:
    if not info.complete:
        return
    slide = await run_in_threadpool(_complete, request, principal, info)
    headers["Slide-Location"] = f"/api/v1/slides/{slide.id}"


@router.options("", status_code=204, summary="tus capabilities")
def options() -> Response:
    return Response(
        status_code=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(MAX_UPLOAD_BYTES),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        },
    )


def _create(request: Request, principal: Principal, length: int, metadata: dict[str, str]) -> UploadInfo:
    store = _store(request)
    _sweep_now_and_then(request, store)
    with transaction(request.app.state.session_factory) as session:
        return service.create(session, principal, store, length, metadata)


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (length is not None and length != "0") or "chunked" in request.headers.get("transfer-encoding", "")


@router.post("", status_code=201, summary="Create an upload (metadata: filename, case_id)")
async def create(request: Request, principal: UploadPrincipal) -> Response:
    if "upload-defer-length" in request.headers:
        raise BadRequest("Upload-Defer-Length is not supported; send Upload-Length")
    length = _int_header(request, "upload-length")
    metadata = service.parse_metadata(request.headers.get("upload-metadata"))
    checksum = service.parse_checksum(request.headers.get("upload-checksum"))
    info = await run_in_threadpool(_create, request, principal, length, metadata)
    headers = {"Location": f"/uploads/{info.id}", **_upload_headers(info)}
    if _has_body(request):
        if request.headers.get("content-type") != OFFSET_STREAM:
            raise UnsupportedMediaType(f"an upload body must be {OFFSET_STREAM}")
        info = await _append(request, _store(request), info.id, 0, checksum)
        headers.update(_upload_headers(info))
        await _finish_if_complete(request, principal, info, headers)
    elif info.complete:
        await _finish_if_complete(request, principal, info, headers)
    return Response(status_code=201, headers=headers)


@router.head("/{upload_id}", summary="The committed offset of an upload")
def head(upload_id: str, request: Request, principal: UploadPrincipal) -> Response:
    info = service.owned(_store(request), principal, upload_id, utcnow())
    headers = {
        **_upload_headers(info),
        "Upload-Length": str(info.length),
        "Upload-Metadata": service.encode_metadata(info),
        "Cache-Control": "no-store",
    }
    return Response(status_code=200, headers=headers)


@router.patch("/{upload_id}", status_code=204, summary="Append bytes at the committed offset")
async def patch(upload_id: str, request: Request, principal: UploadPrincipal) -> Response:
    if request.headers.get("content-type") != OFFSET_STREAM:
        raise UnsupportedMediaType(f"PATCH bodies must be {OFFSET_STREAM}")
    offset = _int_header(request, "upload-offset")
    checksum = service.parse_checksum(request.headers.get("upload-checksum"))
    store = _store(request)
    await run_in_threadpool(service.owned, store, principal, upload_id, utcnow())
    info = await _append(request, store, upload_id, offset, checksum)
    headers = _upload_headers(info)
    await _finish_if_complete(request, principal, info, headers)
    return Response(status_code=204, headers=headers)


@router.delete("/{upload_id}", status_code=204, summary="Terminate an upload and remove its bytes")
def delete(upload_id: str, request: Request, principal: UploadPrincipal) -> Response:
    store = _store(request)
    service.owned(store, principal, upload_id, utcnow())
    writer = store.writer(upload_id)
    try:
        store.remove(upload_id)
    finally:
        writer.close()
    return Response(status_code=204)
