from __future__ import annotations

from fastapi import APIRouter, Response, status

from consult_api.deps import BlobStoreDep, CurrentPrincipal, SessionDep
from consult_api.opinions import pdf, service
from consult_api.opinions.schemas import AddendumIn, OpinionDraft, OpinionEdit, OpinionRead

router = APIRouter(prefix="/cases/{case_id}/opinions", tags=["opinions"])


@router.get("", summary="Signed opinions, and drafts for the case's specialists")
def list_opinions(case_id: str, principal: CurrentPrincipal, session: SessionDep) -> list[OpinionRead]:
    return [OpinionRead.model_validate(o) for o in service.list_opinions(session, principal, case_id)]


@router.post("", status_code=status.HTTP_201_CREATED, summary="Start a draft opinion (assigned specialist)")
def create_opinion(
    case_id: str, data: OpinionDraft, principal: CurrentPrincipal, session: SessionDep
) -> OpinionRead:
    return OpinionRead.model_validate(service.create_opinion(session, principal, case_id, data))


@router.get("/{opinion_id}", summary="One opinion")
def get_opinion(
    case_id: str, opinion_id: str, principal: CurrentPrincipal, session: SessionDep
) -> OpinionRead:
    return OpinionRead.model_validate(service.get_opinion(session, principal, case_id, opinion_id))


@router.patch("/{opinion_id}", summary="Edit a draft opinion (its author)")
def edit_opinion(
    case_id: str, opinion_id: str, data: OpinionEdit, principal: CurrentPrincipal, session: SessionDep
) -> OpinionRead:
    return OpinionRead.model_validate(service.edit_opinion(session, principal, case_id, opinion_id, data))


@router.post("/{opinion_id}/sign", summary="Sign: the opinion becomes immutable and the case concluded")
def sign_opinion(
    case_id: str, opinion_id: str, principal: CurrentPrincipal, session: SessionDep
) -> OpinionRead:
    return OpinionRead.model_validate(service.sign_opinion(session, principal, case_id, opinion_id))


@router.post(
    "/{opinion_id}/addenda",
    status_code=status.HTTP_201_CREATED,
    summary="Add an addendum to a signed opinion",
)
def add_addendum(
    case_id: str, opinion_id: str, data: AddendumIn, principal: CurrentPrincipal, session: SessionDep
) -> OpinionRead:
    return OpinionRead.model_validate(
        service.add_addendum(session, principal, case_id, opinion_id, data.text)
    )


@router.get(
    "/{opinion_id}/pdf",
    summary="The signed opinion as a printable PDF, with confirmed findings and key images",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def opinion_pdf(
    case_id: str, opinion_id: str, principal: CurrentPrincipal, session: SessionDep, store: BlobStoreDep
) -> Response:
    report = pdf.collect_report(session, principal, store, case_id, opinion_id)
    data = pdf.render_pdf(report)
    return Response(
        data,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="opinion-{report.opinion_id}.pdf"',
            "Cache-Control": "private, no-store",
        },
    )
