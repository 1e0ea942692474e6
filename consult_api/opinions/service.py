"""Rules for opinions: assigned specialists draft; the author signs; signed text never changes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.audit import service as audit
from consult_api.cases import service as cases
from consult_api.cases import workflow
from consult_api.cases.models import Case, CaseStatus, EventType
from consult_api.db import utcnow
from consult_api.errors import Conflict, NotPermitted, ResourceNotFound
from consult_api.opinions import repository
from consult_api.opinions.models import Addendum, Opinion, OpinionStatus
from consult_api.opinions.schemas import OpinionDraft, OpinionEdit


def content_digest(opinion: Opinion) -> str:
    """The sha256 sealed at signing over what the specialist signed, by whom and when."""
    body = json.dumps(
        {
            "case_id": opinion.case_id,
            "author_id": opinion.author_id,
            "findings": opinion.findings,
            "impression": opinion.impression,
            "recommendations": opinion.recommendations,
            "signed_at": opinion.signed_at.isoformat() if opinion.signed_at else None,
        },
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _may_read_draft(principal: Principal, case: Case, opinion: Opinion) -> bool:
    return opinion.author_id == principal.id or workflow.is_assigned(principal, case)


def list_opinions(session: Session, principal: Principal, case_id: str) -> Sequence[Opinion]:
    """Signed opinions for everyone who sees the case; drafts only for the case's specialists."""
    case = cases.get_case(session, principal, case_id, audit_read=False)
    visible = [
        o
        for o in repository.of_case(session, case.id)
        if o.status is OpinionStatus.signed or _may_read_draft(principal, case, o)
    ]
    audit.record(session, principal, "opinion.list", "case", case.id, case_id=case.id)
    return visible


def _opinion(session: Session, principal: Principal, case: Case, opinion_id: str) -> Opinion:
    opinion = repository.get(session, case.id, opinion_id)
    if opinion is None or (
        opinion.status is OpinionStatus.draft and not _may_read_draft(principal, case, opinion)
    ):
        raise ResourceNotFound("opinion", opinion_id)
    return opinion


def get_opinion(session: Session, principal: Principal, case_id: str, opinion_id: str) -> Opinion:
    case = cases.get_case(session, principal, case_id, audit_read=False)
    opinion = _opinion(session, principal, case, opinion_id)
    audit.record(session, principal, "opinion.read", "opinion", opinion.id, case_id=case.id)
    return opinion


def create_opinion(session: Session, principal: Principal, case_id: str, data: OpinionDraft) -> Opinion:
    case = cases.get_case(session, principal, case_id, audit_read=False)
    if not workflow.is_assigned(principal, case):
        raise NotPermitted("only a specialist assigned to the case writes an opinion")
    if case.status is not CaseStatus.in_review:
        raise Conflict(f"opinions are written while the case is in_review (it is {case.status})")
    opinion = Opinion(case_id=case.id, author_id=principal.id, **data.model_dump())
    repository.add(session, opinion)
    audit.record(session, principal, "opinion.create", "opinion", opinion.id, case_id=case.id)
    return opinion


def _own_draft(session: Session, principal: Principal, case_id: str, opinion_id: str) -> tuple[Case, Opinion]:
    case = cases.get_case(session, principal, case_id, audit_read=False)
    opinion = _opinion(session, principal, case, opinion_id)
    if opinion.author_id != principal.id:
        raise NotPermitted("only the author may change or sign an opinion")
    if opinion.status is OpinionStatus.signed:
        raise Conflict("a signed opinion is immutable; add an addendum instead")
    return case, opinion


def edit_opinion(
    session: Session, principal: Principal, case_id: str, opinion_id: str, data: OpinionEdit
) -> Opinion:
    case, opinion = _own_draft(session, principal, case_id, opinion_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    for field, value in changes.items():
        setattr(opinion, field, value)
    session.flush()
    audit.record(session, principal, "opinion.update", "opinion", opinion.id, case_id=case.id)
    return opinion


def sign_opinion(session: Session, principal: Principal, case_id: str, opinion_id: str) -> Opinion:
    """Seal the opinion and conclude the case in one transaction."""
    case, opinion = _own_draft(session, principal, case_id, opinion_id)
    if not (opinion.impression.strip() or opinion.findings.strip()):
        raise Conflict("an opinion needs findings or an impression before it is signed")
    if case.status is not CaseStatus.in_review:
        raise Conflict(f"opinions are signed while the case is in_review (it is {case.status})")
    opinion.status = OpinionStatus.signed
    opinion.signed_at = utcnow()
    opinion.content_sha256 = content_digest(opinion)
    session.flush()
    cases.record_event(session, case, principal, EventType.opinion_signed, text=opinion.id)
    cases.transition(session, principal, case, CaseStatus.concluded)
    audit.record(session, principal, "opinion.sign", "opinion", opinion.id, case_id=case.id)
    return opinion


def add_addendum(session: Session, principal: Principal, case_id: str, opinion_id: str, text: str) -> Opinion:
    case = cases.get_case(session, principal, case_id, audit_read=False)
    opinion = _opinion(session, principal, case, opinion_id)
    if opinion.status is not OpinionStatus.signed:
        raise Conflict("addenda are for signed opinions; edit the draft instead")
    if not (opinion.author_id == principal.id or workflow.is_assigned(principal, case)):
        raise NotPermitted("only the author or an assigned specialist may add an addendum")
    addendum = Addendum(opinion_id=opinion.id, author_id=principal.id, text=text)
    opinion.addenda.append(addendum)
    session.flush()
    cases.record_event(session, case, principal, EventType.addendum, text=text)
    audit.record(session, principal, "opinion.addendum", "opinion", opinion.id, case_id=case.id)
    return opinion
