"""Slides over HTTP: listing, DeepZoom descriptor and tiles, thumbnail, region, associated images.

Tiles take a fast path: an ``async`` route that answers a warm tile from memory without touching
the database (the access decision is cached per credential and slide for ``GRANT_TTL_S``) and sends
everything that blocks (authorization on a miss, file reads, decoding) to the threadpool. Opening a
slide (its descriptor) is audited; single tiles are not.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from consult_api.access import Principal
from consult_api.db import transaction
from consult_api.deps import BlobStoreDep, CurrentPrincipal, SessionDep, get_principal
from consult_api.errors import ResourceNotFound, Unauthenticated
from consult_api.slides import service
from consult_api.slides.cache import GrantCache
from consult_api.slides.models import Slide
from consult_api.slides.schemas import SlidePage, SlideRead
from consult_api.slides.service import SlideFiles
from consult_api.slides.tiles import MAX_REGION_SIDE, OpenedSlide, TileEngine
from consult_api.storage.blobs import BlobStore

router = APIRouter(tags=["slides"])
API_PREFIX = "/api/v1"
GRANT_TTL_S = 60.0
TILE_CACHE_CONTROL = "private, max-age=86400, immutable"
JPEG = "image/jpeg"
_JPEG_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {JPEG: {}}}}
_STATE_LOCK = threading.Lock()


@dataclass(frozen=True)
class TileGrant:
    sha256: str
    path: Path


def _app_state(request: Request, name: str, factory: Any) -> Any:
    """Per-process serving state, built on first use (nothing is built at import)."""
    value = getattr(request.app.state, name, None)
    if value is None:
        with _STATE_LOCK:
            value = getattr(request.app.state, name, None)
            if value is None:
                value = factory()
                setattr(request.app.state, name, value)
    return value


def tile_engine(request: Request) -> TileEngine:
    engine: TileEngine = _app_state(request, "tile_engine", TileEngine)
    return engine


def _grants(request: Request) -> GrantCache[tuple[bytes, str], TileGrant]:
    grants: GrantCache[tuple[bytes, str], TileGrant] = _app_state(
        request, "tile_grants", lambda: GrantCache(GRANT_TTL_S)
    )
    return grants


def slide_files(request: Request) -> SlideFiles:
    return SlideFiles(request.app.state.settings.data_dir / "slides")


def _read(slide: Slide) -> SlideRead:
    fields = {c.name: getattr(slide, c.name) for c in Slide.__table__.columns}
    return SlideRead.model_validate({**fields, "dzi_url": f"{API_PREFIX}/slides/{slide.id}.dzi"})


def _opened(request: Request, store: BlobStore, slide: Slide) -> OpenedSlide:
    path = service.serving_path(slide, store, slide_files(request))
    return tile_engine(request).opened(slide.blob_sha256, path)


def _jpeg(data: bytes, etag: str | None, cache_control: str) -> Response:
    headers = {"Cache-Control": cache_control}
    if etag:
        headers["ETag"] = etag
    return Response(data, media_type=JPEG, headers=headers)


@router.get(
    "/slides/{slide_id}_files/{level:int}/{col:int}_{row:int}.jpeg",
    summary="One DeepZoom tile",
    response_class=Response,
    responses=_JPEG_RESPONSE,
)
async def tile(slide_id: str, level: int, col: int, row: int, request: Request) -> Response:
    grant = await _tile_grant(request, slide_id)
    etag = f'"{grant.sha256[:32]}-{level}-{col}-{row}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": TILE_CACHE_CONTROL})
    engine = tile_engine(request)
    data = engine.cached_tile(grant.sha256, level, col, row)
    if data is None:
        data = await run_in_threadpool(engine.tile, grant.sha256, grant.path, level, col, row)
    return _jpeg(data, etag, TILE_CACHE_CONTROL)


@router.get("/slides", summary="Slides of the cases the caller may see")
def list_slides(
    principal: CurrentPrincipal,
    session: SessionDep,
    case_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SlidePage:
    slides, total = service.list_slides(session, principal, case_id, limit, offset)
    return SlidePage(items=[_read(s) for s in slides], total=total, limit=limit, offset=offset)


@router.get("/cases/{case_id}/slides", summary="Slides of one case")
def case_slides(
    case_id: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SlidePage:
    return list_slides(principal, session, case_id, limit, offset)


@router.get(
    "/slides/{slide_id}.dzi",
    summary="DeepZoom descriptor (opening a slide: audited)",
    responses={200: {"content": {"application/xml": {}}}},
)
def dzi(
    slide_id: str, request: Request, principal: CurrentPrincipal, session: SessionDep, store: BlobStoreDep
) -> Response:
    slide = service.get_slide(session, principal, slide_id, action="slide.open")
    descriptor = _opened(request, store, slide).dz.get_dzi("jpeg")
    headers = {"ETag": f'"{slide.blob_sha256[:32]}-dzi"', "Cache-Control": "private, no-cache"}
    return Response(descriptor, media_type="application/xml", headers=headers)


def _credential(request: Request) -> tuple[str | None, str | None]:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    api_key = request.headers.get("x-api-key") or None
    if bearer is None and api_key is None:
        raise Unauthenticated("sign in with a bearer token or send a facility API key")
    return bearer, api_key


def _authorize_tiles(request: Request, slide_id: str, bearer: str | None, api_key: str | None) -> TileGrant:
    """The full check (token, user, case visibility) in a short transaction of its own."""
    store: BlobStore = request.app.state.blob_store
    with transaction(request.app.state.session_factory) as session:
        principal: Principal = get_principal(session, request.app.state.settings, bearer, api_key)
        slide = service.get_slide(session, principal, slide_id, action=None)
        path = service.serving_path(slide, store, slide_files(request))
    return TileGrant(slide.blob_sha256, path)


async def _tile_grant(request: Request, slide_id: str) -> TileGrant:
    bearer, api_key = _credential(request)
    key = (hashlib.sha256(f"{bearer}|{api_key}".encode()).digest(), slide_id)
    grants = _grants(request)
    grant = grants.get(key, time.monotonic())
    if grant is None:
        grant = await run_in_threadpool(_authorize_tiles, request, slide_id, bearer, api_key)
        grants.put(key, grant, time.monotonic())
    return grant


@router.get("/slides/{slide_id}", summary="One slide's metadata")
def get_slide(slide_id: str, principal: CurrentPrincipal, session: SessionDep) -> SlideRead:
    return _read(service.get_slide(session, principal, slide_id))


@router.get(
    "/slides/{slide_id}/thumbnail",
    summary="A JPEG thumbnail",
    response_class=Response,
    responses=_JPEG_RESPONSE,
)
def thumbnail(
    slide_id: str,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    max_size: Annotated[int, Query(ge=16, le=2048)] = 512,
) -> Response:
    slide = service.get_slide(session, principal, slide_id, action="slide.thumbnail")
    data = _opened(request, store, slide).thumbnail(max_size)
    return _jpeg(data, f'"{slide.blob_sha256[:32]}-thumb-{max_size}"', "private, max-age=86400")


@router.get(
    "/slides/{slide_id}/region",
    summary="A region at a pyramid level (x, y in level-0 pixels)",
    response_class=Response,
    responses=_JPEG_RESPONSE,
)
def region(
    slide_id: str,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    x: Annotated[int, Query(ge=0)],
    y: Annotated[int, Query(ge=0)],
    width: Annotated[int, Query(ge=1, le=MAX_REGION_SIDE)],
    height: Annotated[int, Query(ge=1, le=MAX_REGION_SIDE)],
    level: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    slide = service.get_slide(session, principal, slide_id, action="slide.region")
    data = _opened(request, store, slide).region(x, y, level, width, height)
    etag = f'"{slide.blob_sha256[:32]}-r-{x}-{y}-{level}-{width}-{height}"'
    return _jpeg(data, etag, "private, max-age=86400")


@router.get(
    "/slides/{slide_id}/associated/{name}",
    summary="An associated image (label and macro are patient data)",
    response_class=Response,
    responses=_JPEG_RESPONSE,
)
def associated_image(
    slide_id: str,
    name: str,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
) -> Response:
    slide = service.read_associated(session, principal, slide_id, name)
    data = _opened(request, store, slide).associated(name)
    if data is None:
        raise ResourceNotFound("associated image", name)
    return _jpeg(data, None, "private, no-store")
