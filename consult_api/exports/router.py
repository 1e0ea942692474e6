from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request, status
from fastapi.responses import FileResponse
from pydantic import AwareDatetime

from consult_api.access import Principal
from consult_api.deps import BlobStoreDep, CurrentPrincipal, SessionDep
from consult_api.errors import ResourceNotFound
from consult_api.exports import service
from consult_api.schemas import Output, StrictInput
from consult_api.slides.service import SlideFiles
from datasets.manifest import MANIFEST_NAME

router = APIRouter(prefix="/exports", tags=["exports"])
_EXPORT_ID = re.compile(r"^training-\d{8}T\d{6}Z-[0-9a-f]{8}$")


class ExportRequest(StrictInput):
    since: AwareDatetime | None = None


class ExportRead(Output):
    id: str
    items: int
    series: int
    slides: int
    instances: int
    skipped: int


def _exports_root(request: Request) -> Path:
    return Path(request.app.state.settings.data_dir) / "exports"


def _slide_files(request: Request) -> SlideFiles:
    return SlideFiles(Path(request.app.state.settings.data_dir) / "slides")


@router.post(
    "/training", status_code=status.HTTP_201_CREATED, summary="Export confirmed findings for training"
)
def create_export(
    data: ExportRequest,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
) -> ExportRead:
    # A random suffix: two exports started within the same second must not share a folder.
    export_id = f"training-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"
    folder = _exports_root(request) / export_id
    result = service.export_training(
        session, principal, store, _slide_files(request), folder, since=data.since
    )
    return ExportRead(
        id=export_id,
        items=result.items,
        series=result.series,
        slides=result.slides,
        instances=result.instances,
        skipped=len(result.skipped),
    )


def _folder(request: Request, principal: Principal, export_id: str) -> Path:
    service.check_role(principal)
    folder = _exports_root(request) / export_id
    if not _EXPORT_ID.match(export_id) or not (folder / MANIFEST_NAME).is_file():
        raise ResourceNotFound("export", export_id)
    return folder


@router.get("/training/{export_id}/manifest", summary="The export's manifest.json")
def get_manifest(export_id: str, request: Request, principal: CurrentPrincipal) -> FileResponse:
    return FileResponse(_folder(request, principal, export_id) / MANIFEST_NAME, media_type="application/json")


@router.get("/training/{export_id}/archive", summary="The whole export as a zip")
def get_archive(export_id: str, request: Request, principal: CurrentPrincipal) -> FileResponse:
    bundle = service.archive(_folder(request, principal, export_id))
    return FileResponse(bundle, media_type="application/zip", filename=f"{export_id}.zip")
