"""DICOMweb (PS3.18) under /dicom-web: STOW-RS, QIDO-RS, WADO-RS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from python_multipart.multipart import parse_options_header

from consult_api.deps import BlobStoreDep, CurrentPrincipal, SessionDep, SettingsDep
from consult_api.dicom import pixels, qido, service
from consult_api.dicom.models import Instance
from consult_api.dicom.multipart import RelatedReceiver, new_boundary, related_boundary, related_stream
from consult_api.dicom.service import Urls
from consult_api.errors import HoichanError

router = APIRouter(prefix="/dicom-web", tags=["dicomweb"])
DICOM_JSON = "application/dicom+json"
CaseParam = Annotated[str | None, Query(alias="case", description="Attach the instances to this case.")]
CaseHeader = Annotated[str | None, Header(alias="X-Hoichan-Case")]


class DicomJSONResponse(JSONResponse):
    """Documents QIDO-RS and metadata answers as ``application/dicom+json`` in the OpenAPI schema."""

    media_type = DICOM_JSON


_BINARY = {"schema": {"type": "string", "format": "binary"}}
MULTIPART_OK: dict[int | str, dict[str, Any]] = {
    200: {"description": "multipart/related parts", "content": {"multipart/related": _BINARY}}
}
IMAGE_OK: dict[int | str, dict[str, Any]] = {
    200: {"description": "The rendered image", "content": {"image/jpeg": _BINARY, "image/png": _BINARY}}
}


class NotAcceptable(HoichanError):
    status_code = 406
    title = "Not acceptable"


def _urls(request: Request) -> Urls:
    return Urls(str(request.base_url).rstrip("/") + "/dicom-web")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON, headers=headers)


# ------------------------------------------------------------------------------------ STOW-RS


async def _stow(
    request: Request,
    principal: Any,
    session: Any,
    store: Any,
    settings: Any,
    case_id: str | None,
    study_uid: str | None,
) -> JSONResponse:
    boundary = related_boundary(request.headers.get("content-type", ""))
    receiver = RelatedReceiver(
        boundary, store, max_bytes=settings.max_stow_bytes, max_parts=settings.max_stow_parts
    )
    parts = await receiver.consume(request.stream())
    try:
        ctx = await run_in_threadpool(
            service.stow, session, principal, store, parts, case_id=case_id, expected_study_uid=study_uid
        )
    finally:
        receiver.discard()
    status, body = service.stow_response(ctx, _urls(request))
    return _json(body, status)


@router.post("/studies", summary="STOW-RS: store instances (multipart/related; type=application/dicom)")
async def stow_studies(
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    settings: SettingsDep,
    case: CaseParam = None,
    case_header: CaseHeader = None,
) -> JSONResponse:
    return await _stow(request, principal, session, store, settings, case or case_header, None)


@router.post("/studies/{study_uid}", summary="STOW-RS into one study")
async def stow_study(
    study_uid: str,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    settings: SettingsDep,
    case: CaseParam = None,
    case_header: CaseHeader = None,
) -> JSONResponse:
    return await _stow(request, principal, session, store, settings, case or case_header, study_uid)


# ------------------------------------------------------------------------------------ QIDO-RS


def _qido(
    request: Request, principal: Any, session: Any, store: Any, level: qido.Level, **scope: str
) -> JSONResponse:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    results, ignored = service.search(session, principal, store, level, params, _urls(request), **scope)
    headers = (
        {"Warning": f'299 hoichan "unsupported matching keys ignored: {",".join(ignored)}"'}
        if ignored
        else None
    )
    if not results:
        return JSONResponse([], status_code=200, media_type=DICOM_JSON, headers=headers)
    return _json(results, headers=headers)


@router.get("/studies", summary="QIDO-RS: search studies", response_class=DicomJSONResponse)
def search_studies(
    request: Request, principal: CurrentPrincipal, session: SessionDep, store: BlobStoreDep
) -> JSONResponse:
    return _qido(request, principal, session, store, qido.Level.study)


@router.get("/series", summary="QIDO-RS: search series", response_class=DicomJSONResponse)
def search_series(
    request: Request, principal: CurrentPrincipal, session: SessionDep, store: BlobStoreDep
) -> JSONResponse:
    return _qido(request, principal, session, store, qido.Level.series)


@router.get("/instances", summary="QIDO-RS: search instances", response_class=DicomJSONResponse)
def search_instances(
    request: Request, principal: CurrentPrincipal, session: SessionDep, store: BlobStoreDep
) -> JSONResponse:
    return _qido(request, principal, session, store, qido.Level.instance)


@router.get(
    "/studies/{study_uid}/series", summary="QIDO-RS: series of a study", response_class=DicomJSONResponse
)
def search_study_series(
    study_uid: str, request: Request, principal: CurrentPrincipal, session: SessionDep, store: BlobStoreDep
) -> JSONResponse:
    return _qido(request, principal, session, store, qido.Level.series, study_uid=study_uid)


@router.get(
    "/studies/{study_uid}/instances",
    summary="QIDO-RS: instances of a study",
    response_class=DicomJSONResponse,
)
def search_study_instances(
    study_uid: str, request: Request, principal: CurrentPrincipal, session: SessionDep, store: BlobStoreDep
) -> JSONResponse:
    return _qido(request, principal, session, store, qido.Level.instance, study_uid=study_uid)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances",
    summary="QIDO-RS: instances of a series",
    response_class=DicomJSONResponse,
)
def search_series_instances(
    study_uid: str,
    series_uid: str,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
) -> JSONResponse:
    return _qido(
        request, principal, session, store, qido.Level.instance, study_uid=study_uid, series_uid=series_uid
    )


# ------------------------------------------------------------------------------------ WADO-RS


def _check_accept_dicom(accept: str | None) -> None:
    """We return instances as stored: any transfer syntax the client names must be theirs or ``*``."""
    if not accept:
        return
    for item in accept.split(","):
        media, params = parse_options_header(item.strip())
        media_type = media.decode().lower()
        if media_type in ("*/*", "multipart/*", "application/dicom"):
            return
        if media_type == "multipart/related":
            part_type = params.get(b"type", b"application/dicom").decode().strip('"').lower()
            syntax = params.get(b"transfer-syntax", b"*").decode().strip('"')
            if part_type == "application/dicom" and syntax in ("*", ""):
                return
            if part_type == "application/dicom":
                return  # a named syntax: checked per instance by the client; we do not transcode
    raise NotAcceptable('instances are served as multipart/related; type="application/dicom"')


def _retrieve(store: Any, found: Any) -> StreamingResponse:
    boundary = new_boundary()
    body: Iterator[bytes] = related_stream(
        service.instance_stream(store, found), boundary, "application/dicom"
    )
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return StreamingResponse(body, media_type=media, headers={"Cache-Control": "private, no-store"})


@router.get(
    "/studies/{study_uid}",
    summary="WADO-RS: a whole study",
    response_class=Response,
    responses=MULTIPART_OK,
)
def retrieve_study(
    study_uid: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    accept: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    _check_accept_dicom(accept)
    found = service.instances(session, principal, study_uid, action="dicom.retrieve")
    return _retrieve(store, found)


@router.get(
    "/studies/{study_uid}/series/{series_uid}",
    summary="WADO-RS: a series",
    response_class=Response,
    responses=MULTIPART_OK,
)
def retrieve_series(
    study_uid: str,
    series_uid: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    accept: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    _check_accept_dicom(accept)
    found = service.instances(session, principal, study_uid, series_uid, action="dicom.retrieve")
    return _retrieve(store, found)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
    summary="WADO-RS: an instance",
    response_class=Response,
    responses=MULTIPART_OK,
)
def retrieve_instance(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    accept: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    _check_accept_dicom(accept)
    found = service.instances(session, principal, study_uid, series_uid, sop_uid, action="dicom.retrieve")
    return _retrieve(store, found)


@router.get(
    "/studies/{study_uid}/metadata", summary="WADO-RS: metadata of a study", response_class=DicomJSONResponse
)
def study_metadata(
    study_uid: str, request: Request, principal: CurrentPrincipal, session: SessionDep, store: BlobStoreDep
) -> JSONResponse:
    found = service.instances(session, principal, study_uid, action="dicom.metadata")
    return _json(service.metadata(store, found, _urls(request)))


@router.get(
    "/studies/{study_uid}/series/{series_uid}/metadata",
    summary="WADO-RS: metadata of a series",
    response_class=DicomJSONResponse,
)
def series_metadata(
    study_uid: str,
    series_uid: str,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
) -> JSONResponse:
    found = service.instances(session, principal, study_uid, series_uid, action="dicom.metadata")
    return _json(service.metadata(store, found, _urls(request)))


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
    summary="WADO-RS: metadata of an instance",
    response_class=DicomJSONResponse,
)
def instance_metadata(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
) -> JSONResponse:
    found = service.instances(session, principal, study_uid, series_uid, sop_uid, action="dicom.metadata")
    return _json(service.metadata(store, found, _urls(request)))


def _one_instance(session: Any, principal: Any, study_uid: str, series_uid: str, sop_uid: str) -> Instance:
    return service.instances(session, principal, study_uid, series_uid, sop_uid, action="dicom.pixels")[0]


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}",
    summary="WADO-RS: frames, as stored (raw pixels or the compressed bitstream)",
    response_class=Response,
    responses=MULTIPART_OK,
)
def retrieve_frames(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame_list: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
) -> Response:
    numbers = pixels.parse_frame_list(frame_list)
    instance = _one_instance(session, principal, study_uid, series_uid, sop_uid)
    frame_set = pixels.extract_frames(service.load_dataset(store, instance), numbers)
    boundary = new_boundary()
    part_type = frame_set.media_type
    if part_type != "application/octet-stream":
        part_type = f"{part_type}; transfer-syntax={frame_set.transfer_syntax_uid}"
    body = b"".join(related_stream(([frame] for frame in frame_set.frames), boundary, part_type))
    media = f'multipart/related; type="{frame_set.media_type}"; boundary={boundary}'
    return Response(body, media_type=media, headers={"Cache-Control": "private, max-age=3600"})


def _rendered_media_type(accept: str | None) -> str:
    if accept and "image/png" in accept and "image/jpeg" not in accept:
        return "image/png"
    return "image/jpeg"


def _render(
    instance: Instance,
    store: Any,
    frame: int,
    window: str | None,
    viewport: str | None,
    quality: int,
    accept: str | None,
) -> Response:
    media_type = _rendered_media_type(accept)
    image = pixels.render(
        service.load_dataset(store, instance),
        frame=frame,
        window=pixels.parse_window(window),
        viewport=pixels.parse_viewport(viewport),
        media_type=media_type,
        quality=quality,
    )
    return Response(image, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered",
    summary="WADO-RS: the instance rendered as JPEG or PNG (window=center,width; viewport=w,h)",
    response_class=Response,
    responses=IMAGE_OK,
)
def rendered_instance(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    window: str | None = None,
    viewport: str | None = None,
    quality: Annotated[int, Query(ge=1, le=100)] = 90,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    instance = _one_instance(session, principal, study_uid, series_uid, sop_uid)
    return _render(instance, store, 1, window, viewport, quality, accept)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame}/rendered",
    summary="WADO-RS: one frame rendered as JPEG or PNG",
    response_class=Response,
    responses=IMAGE_OK,
)
def rendered_frame(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: int,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    window: str | None = None,
    viewport: str | None = None,
    quality: Annotated[int, Query(ge=1, le=100)] = 90,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    instance = _one_instance(session, principal, study_uid, series_uid, sop_uid)
    return _render(instance, store, max(frame, 1), window, viewport, quality, accept)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/{tag}",
    summary="WADO-RS: one bulk data element",
    response_class=Response,
    responses=MULTIPART_OK,
)
def retrieve_bulkdata(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    tag: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
) -> Response:
    instance = _one_instance(session, principal, study_uid, series_uid, sop_uid)
    value = service.bulkdata(store, instance, tag)
    boundary = new_boundary()
    body = b"".join(related_stream([[value]], boundary, "application/octet-stream"))
    media = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
    return Response(body, media_type=media)
