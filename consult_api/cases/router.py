from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, File, Query, UploadFile, status
from fastapi.responses import StreamingResponse
from sqlalchemy import Row
from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.cases import service
from consult_api.cases.models import Case, CaseKind, CaseStatus, Priority
from consult_api.cases.repository import CaseFilter
from consult_api.cases.schemas import (
    AssignmentIn,
    CaseCreate,
    CasePage,
    CaseRead,
    CaseSummary,
    CaseUpdate,
    CommentIn,
    EventRead,
    StatusChange,
)
from consult_api.deps import BlobStoreDep, CurrentPrincipal, SessionDep, SettingsDep
from consult_api.errors import PayloadTooLarge
from consult_api.storage.blobs import read_chunks

router = APIRouter(prefix="/cases", tags=["cases"])


def _summary_fields(case: Case | Row[Any], assigned_user_ids: list[str]) -> dict[str, object]:
    """The summary of an ORM case or of a worklist row (the same names either way)."""
    return {
        "id": case.id,
        "kind": case.kind,
        "status": case.status,
        "priority": case.priority,
        "urgent": case.urgent,
        "deadline": case.deadline,
        "clinical_question": case.clinical_question,
        "referring_facility_id": case.referring_facility_id,
        "target_facility_id": case.target_facility_id,
        "assigned_user_ids": assigned_user_ids,
        "created_at": case.created_at,
        "submitted_at": case.submitted_at,
        "alerts": list(case.alerts or []),
    }


def _read(session: Session, principal: Principal, case: Case) -> CaseRead:
    return CaseRead.model_validate(
        {
            **_summary_fields(case, [a.user_id for a in case.assignments]),
            "clinical_notes": case.clinical_notes,
            "patient": case.patient,
            "created_by": case.created_by,
            "updated_at": case.updated_at,
            "concluded_at": case.concluded_at,
            "closed_at": case.closed_at,
            "allowed_transitions": service.allowed_transitions(session, principal, case),
        }
    )


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a draft case (referrer)")
def create_case(data: CaseCreate, principal: CurrentPrincipal, session: SessionDep) -> CaseRead:
    return _read(session, principal, service.create_case(session, principal, data))


@router.get("", summary="The worklist: visible cases, most urgent first")
def list_cases(
    principal: CurrentPrincipal,
    session: SessionDep,
    status_: Annotated[list[CaseStatus] | None, Query(alias="status")] = None,
    kind: Annotated[list[CaseKind] | None, Query()] = None,
    priority: Annotated[list[Priority] | None, Query()] = None,
    assigned_to_me: bool = False,
    referring_facility_id: str | None = None,
    target_facility_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> CasePage:
    flt = CaseFilter(
        statuses=status_ or (),
        kinds=kind or (),
        priorities=priority or (),
        assigned_to=principal.id if assigned_to_me else None,
        referring_facility_id=referring_facility_id,
        target_facility_id=target_facility_id,
    )
    page = service.list_cases(session, principal, flt, limit, offset)
    items = [CaseSummary.model_validate(_summary_fields(c, page.assigned_user_ids[c.id])) for c in page.cases]
    return CasePage(items=items, total=page.total, total_exact=page.total_exact, limit=limit, offset=offset)


@router.get("/{case_id}", summary="One case with its patient")
def get_case(case_id: str, principal: CurrentPrincipal, session: SessionDep) -> CaseRead:
    return _read(session, principal, service.get_case(session, principal, case_id))


@router.patch("/{case_id}", summary="Edit a draft, or add information while more is asked (referrer)")
def update_case(case_id: str, data: CaseUpdate, principal: CurrentPrincipal, session: SessionDep) -> CaseRead:
    return _read(session, principal, service.update_case(session, principal, case_id, data))


@router.post("/{case_id}/status", summary="Move the case through its status machine")
def change_status(
    case_id: str, data: StatusChange, principal: CurrentPrincipal, session: SessionDep
) -> CaseRead:
    case = service.change_status(session, principal, case_id, data.status, data.comment)
    return _read(session, principal, case)


@router.get("/{case_id}/timeline", summary="Comments, status changes, attachments and assignments")
def timeline(case_id: str, principal: CurrentPrincipal, session: SessionDep) -> list[EventRead]:
    return [EventRead.model_validate(e) for e in service.timeline(session, principal, case_id)]


@router.post("/{case_id}/comments", status_code=status.HTTP_201_CREATED, summary="Comment on the case")
def add_comment(case_id: str, data: CommentIn, principal: CurrentPrincipal, session: SessionDep) -> EventRead:
    return EventRead.model_validate(service.add_comment(session, principal, case_id, data.text))


@router.post("/{case_id}/assignments", status_code=status.HTTP_201_CREATED, summary="Assign a specialist")
def assign(case_id: str, data: AssignmentIn, principal: CurrentPrincipal, session: SessionDep) -> CaseRead:
    return _read(session, principal, service.assign(session, principal, case_id, data.user_id))


@router.delete("/{case_id}/assignments/{user_id}", summary="Remove an assignment")
def unassign(case_id: str, user_id: str, principal: CurrentPrincipal, session: SessionDep) -> CaseRead:
    return _read(session, principal, service.unassign(session, principal, case_id, user_id))


def _limited(stream: BinaryIO, limit: int) -> Iterator[bytes]:
    total = 0
    for chunk in read_chunks(stream):
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"attachments are limited to {limit} bytes")
        yield chunk


@router.post("/{case_id}/attachments", status_code=status.HTTP_201_CREATED, summary="Attach a document")
def add_attachment(
    case_id: str,
    file: Annotated[UploadFile, File()],
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    settings: SettingsDep,
) -> EventRead:
    event = service.add_attachment(
        session,
        principal,
        store,
        case_id,
        filename=(file.filename or "attachment")[:255],
        content_type=(file.content_type or "application/octet-stream")[:100],
        chunks=_limited(file.file, settings.max_request_bytes),
    )
    return EventRead.model_validate(event)


@router.get(
    "/{case_id}/attachments/{event_id}", summary="Download an attachment (verified against its sha256)"
)
def get_attachment(
    case_id: str, event_id: str, principal: CurrentPrincipal, session: SessionDep, store: BlobStoreDep
) -> StreamingResponse:
    event, chunks = service.open_attachment(session, principal, store, case_id, event_id)
    safe_name = (event.filename or "attachment").replace('"', "")
    return StreamingResponse(
        chunks,
        media_type=event.content_type or "application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{safe_name}"',
            "ETag": f'"{event.blob_sha256}"',
            "Cache-Control": "private, no-store",
        },
    )
