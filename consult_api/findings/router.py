"""Findings on a case (list, heatmap, accept, reject, amend) and per-model-version agreement."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from consult_api.deps import BlobStoreDep, CurrentPrincipal, SessionDep
from consult_api.findings import service
from consult_api.findings.models import FindingState
from consult_api.findings.schemas import AmendIn, FindingRead, ModelAgreement, ReviewIn

router = APIRouter(tags=["findings"])


@router.get("/cases/{case_id}/findings", summary="AI and specialist findings on a case")
def list_findings(case_id: str, principal: CurrentPrincipal, session: SessionDep) -> list[FindingRead]:
    return [FindingRead.model_validate(f) for f in service.list_findings(session, principal, case_id)]


HEATMAP_CACHE_CONTROL = "private, max-age=3600"


@router.get(
    "/cases/{case_id}/findings/{finding_id}/heatmap",
    summary="The finding's heatmap as a transparent PNG overlay (slide thumbnail or series slice)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 304: {"description": "Not modified"}},
)
def heatmap(
    case_id: str,
    finding_id: str,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    slice_index: Annotated[
        int | None, Query(alias="slice", ge=0, description="Series slice (default: the finding's)")
    ] = None,
    max_side: Annotated[int, Query(ge=64, le=4096, description="Slide overlay's longer side")] = 1024,
) -> Response:
    """404 unless the caller sees the case and the finding has a heatmap; the blob is immutable, so the
    ETag is its digest with the rendering parameters."""
    finding = service.heatmap_finding(session, principal, case_id, finding_id)
    etag = (
        f'"{str(finding.heatmap_sha256)[:32]}-{slice_index if slice_index is not None else "d"}-{max_side}"'
    )
    headers = {"ETag": etag, "Cache-Control": HEATMAP_CACHE_CONTROL}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    png = service.render_heatmap(session, store, finding, slice_index=slice_index, max_side=max_side)
    return Response(png, media_type="image/png", headers=headers)


@router.post("/cases/{case_id}/findings/{finding_id}/accept", summary="Agree with a finding (specialist)")
def accept(
    case_id: str, finding_id: str, data: ReviewIn, principal: CurrentPrincipal, session: SessionDep
) -> FindingRead:
    finding = service.review(
        session, principal, case_id, finding_id, FindingState.accepted, comment=data.comment
    )
    return FindingRead.model_validate(finding)


@router.post("/cases/{case_id}/findings/{finding_id}/reject", summary="Disagree with a finding (specialist)")
def reject(
    case_id: str, finding_id: str, data: ReviewIn, principal: CurrentPrincipal, session: SessionDep
) -> FindingRead:
    finding = service.review(
        session, principal, case_id, finding_id, FindingState.rejected, comment=data.comment
    )
    return FindingRead.model_validate(finding)


@router.post(
    "/cases/{case_id}/findings/{finding_id}/amend", summary="Correct a finding's label or region (specialist)"
)
def amend(
    case_id: str, finding_id: str, data: AmendIn, principal: CurrentPrincipal, session: SessionDep
) -> FindingRead:
    finding = service.review(
        session,
        principal,
        case_id,
        finding_id,
        FindingState.amended,
        comment=data.comment,
        label=data.label,
        region=data.region,
    )
    return FindingRead.model_validate(finding)


@router.get("/models/agreement", summary="AI-vs-specialist agreement per model version (ML engineers)")
def agreement(principal: CurrentPrincipal, session: SessionDep) -> list[ModelAgreement]:
    return service.agreement(session, principal)
