"""Rules for consultation cases: creation, the status machine, assignment, timeline, attachments."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from consult_api.access import Principal, Role
from consult_api.audit import service as audit
from consult_api.cases import repository, workflow
from consult_api.cases.models import (
    PRIORITY_RANK,
    Case,
    CaseAssignment,
    CaseEvent,
    CaseStatus,
    EventType,
    Patient,
    Priority,
)
from consult_api.cases.repository import CaseFilter
from consult_api.cases.schemas import CaseCreate, CaseUpdate, PatientIn
from consult_api.db import utcnow
from consult_api.errors import Conflict, InvalidInput, InvalidTransition, NotPermitted, ResourceNotFound
from consult_api.facilities import repository as facilities
from consult_api.facilities.service import check_referral_target
from consult_api.opinions.models import Opinion, OpinionStatus
from consult_api.storage.blobs import BlobRef, BlobStore
from consult_api.users import repository as users

TURNAROUND = {
    Priority.critical: timedelta(hours=1),
    Priority.urgent: timedelta(hours=4),
    Priority.routine: timedelta(hours=48),
}
"""Default time to a signed opinion, counted from submission, when the referrer sets no deadline."""


def get_case(session: Session, principal: Principal, case_id: str, *, audit_read: bool = True) -> Case:
    case = repository.visible_case(session, principal, case_id)
    if case is None:
        raise ResourceNotFound("case", case_id)
    if audit_read:
        audit.record(session, principal, "case.read", "case", case.id, case_id=case.id)
    return case


def list_cases(
    session: Session, principal: Principal, flt: CaseFilter, limit: int, offset: int
) -> repository.WorklistPage:
    page = repository.worklist(session, principal, flt, limit, offset)
    audit.record(
        session,
        principal,
        "case.list",
        "case",
        None,
        detail={"case_ids": [c.id for c in page.cases], "total": page.total},
    )
    return page


def record_event(
    session: Session, case: Case, principal: Principal | None, type_: EventType, **fields: object
) -> CaseEvent:
    event = CaseEvent(case_id=case.id, type=type_, actor=principal.actor if principal else "system", **fields)
    repository.add(session, event)
    return event


def _upsert_patient(session: Session, issuer_facility_id: str, data: PatientIn) -> Patient:
    """One row per (issuing facility, identifier); demographics follow the latest referral."""
    patient = repository.patient_by_identifier(session, issuer_facility_id, data.identifier)
    if patient is None:
        patient = Patient(issuer_facility_id=issuer_facility_id, identifier=data.identifier)
        session.add(patient)
    patient.name, patient.birth_date, patient.sex = data.name, data.birth_date, data.sex
    session.flush()
    return patient


def _check_may_refer(session: Session, principal: Principal, target_facility_id: str) -> None:
    source = facilities.get(session, principal.facility_id)
    target = facilities.get(session, target_facility_id)
    if source is None or target is None:
        raise InvalidInput(f"facility {target_facility_id} does not exist")
    check_referral_target(source, target)
    if target.id not in {f.id for f in source.refers_to}:
        raise InvalidInput(
            f"{source.code} has no referral link to {target.code}; an administrator must add one"
        )


def _set_priority(case: Case, priority: Priority) -> None:
    case.priority = priority
    case.priority_rank = PRIORITY_RANK[priority]


def create_case(session: Session, principal: Principal, data: CaseCreate) -> Case:
    if not principal.has_any(Role.referrer, Role.admin):
        raise NotPermitted("only referrers create cases")
    _check_may_refer(session, principal, data.target_facility_id)
    _check_deadline(data.deadline)
    patient = _upsert_patient(session, principal.facility_id, data.patient)
    case = Case(
        kind=data.kind,
        target_facility_id=data.target_facility_id,
        referring_facility_id=principal.facility_id,
        patient_id=patient.id,
        clinical_question=data.clinical_question,
        clinical_notes=data.clinical_notes,
        urgent=data.urgent,
        deadline=data.deadline,
        created_by=principal.actor,
    )
    _set_priority(case, Priority.urgent if data.urgent else Priority.routine)
    repository.add(session, case)
    record_event(session, case, principal, EventType.created, to_status=CaseStatus.draft.value)
    audit.record(session, principal, "case.create", "case", case.id, case_id=case.id)
    return case


def _check_deadline(deadline: datetime | None) -> None:
    if deadline is not None and deadline <= utcnow():
        raise InvalidInput("deadline must be in the future")


def update_case(session: Session, principal: Principal, case_id: str, data: CaseUpdate) -> Case:
    case = get_case(session, principal, case_id, audit_read=False)
    if not (principal.is_referrer_for(case) or principal.is_admin):
        raise NotPermitted("only the referring facility may edit the case")
    if case.status not in workflow.EDITABLE_STATUSES:
        raise Conflict(f"a case can be edited only while {' or '.join(sorted(workflow.EDITABLE_STATUSES))}")
    changes = data.model_dump(exclude_unset=True)
    _check_deadline(data.deadline)
    for field, value in changes.items():
        setattr(case, field, value)
    if "urgent" in changes and case.priority is not Priority.critical:
        _set_priority(case, Priority.urgent if case.urgent else Priority.routine)
    session.flush()
    audit.record(
        session,
        principal,
        "case.update",
        "case",
        case.id,
        case_id=case.id,
        detail={"fields": sorted(changes)},
    )
    return case


def _has_signed_opinion(session: Session, case_id: str) -> bool:
    query = select(Opinion.id).where(Opinion.case_id == case_id, Opinion.status == OpinionStatus.signed)
    return session.scalar(query.limit(1)) is not None


def allowed_transitions(session: Session, principal: Principal, case: Case) -> list[CaseStatus]:
    """The statuses this caller could move the case to now (the viewer shows these as buttons)."""
    signed = _has_signed_opinion(session, case.id)
    return [
        target
        for target in workflow.allowed_from(case.status)
        if workflow.refusal(principal, case, target, has_signed_opinion=signed) is None
    ]


def transition(
    session: Session, principal: Principal | None, case: Case, target: CaseStatus, comment: str | None = None
) -> Case:
    """Move ``case`` to ``target``: 409 if the machine forbids it, 403 if this caller may not."""
    current = case.status
    if not workflow.is_legal(current, target):
        raise InvalidTransition(
            current.value, target.value, [s.value for s in workflow.allowed_from(current)]
        )
    reason = workflow.refusal(
        principal, case, target, has_signed_opinion=_has_signed_opinion(session, case.id)
    )
    if reason is not None:
        raise NotPermitted(reason)
    if (current, target) in workflow.COMMENT_REQUIRED and not comment:
        raise InvalidInput(f"moving from {current} to {target} needs a comment saying what is asked or given")
    if target is CaseStatus.in_review and current in (CaseStatus.submitted, CaseStatus.triaged) and principal:
        _assign(session, principal, case, principal.id)
    _apply_status(case, target)
    record_event(
        session,
        case,
        principal,
        EventType.status_changed,
        from_status=current.value,
        to_status=target.value,
        text=comment or "",
    )
    audit.record(
        session,
        principal,
        "case.status",
        "case",
        case.id,
        case_id=case.id,
        detail={"from": current.value, "to": target.value},
    )
    return case


def _apply_status(case: Case, target: CaseStatus) -> None:
    now = utcnow()
    case.status = target
    if target is CaseStatus.submitted:
        case.submitted_at = now
        if case.deadline is None:
            case.deadline = now + TURNAROUND[case.priority]
    elif target is CaseStatus.concluded:
        case.concluded_at = now
    elif target is CaseStatus.closed:
        case.closed_at = now


def change_status(
    session: Session, principal: Principal, case_id: str, target: CaseStatus, comment: str | None
) -> Case:
    case = get_case(session, principal, case_id, audit_read=False)
    return transition(session, principal, case, target, comment)


def add_comment(session: Session, principal: Principal, case_id: str, text: str) -> CaseEvent:
    case = get_case(session, principal, case_id, audit_read=False)
    if case.status is CaseStatus.closed:
        raise Conflict("the case is closed")
    event = record_event(session, case, principal, EventType.comment, text=text)
    audit.record(session, principal, "case.comment", "case_event", event.id, case_id=case.id)
    return event


def timeline(session: Session, principal: Principal, case_id: str) -> Sequence[CaseEvent]:
    case = get_case(session, principal, case_id, audit_read=False)
    audit.record(session, principal, "case.timeline", "case", case.id, case_id=case.id)
    return repository.timeline(session, case.id)


def _assignable(session: Session, case: Case, user_id: str) -> None:
    user = users.get(session, user_id)
    if user is None or not user.is_active or user.facility_id != case.target_facility_id:
        raise InvalidInput("assignee must be an active user of the target facility")
    roles = {Role(r) for r in user.roles}
    probe = Principal(
        kind="user", id=user.id, facility_id=user.facility_id, roles=frozenset(roles), name=user.username
    )
    if not probe.is_specialist_for(case):
        raise InvalidInput(f"user {user.username} has no specialty covering {case.kind} cases")


def _assign(session: Session, principal: Principal, case: Case, user_id: str) -> None:
    if any(a.user_id == user_id for a in case.assignments):
        return
    _assignable(session, case, user_id)
    case.assignments.append(CaseAssignment(user_id=user_id, assigned_by=principal.actor))
    session.flush()
    record_event(session, case, principal, EventType.assigned, text=user_id)


def assign(session: Session, principal: Principal, case_id: str, user_id: str) -> Case:
    case = get_case(session, principal, case_id, audit_read=False)
    if not (principal.is_specialist_for(case) or principal.manages_facility(case.target_facility_id)):
        raise NotPermitted("only the target facility's specialists or administrators assign cases")
    if case.status in (CaseStatus.draft, CaseStatus.closed):
        raise Conflict(f"a {case.status} case cannot be assigned")
    _assign(session, principal, case, user_id)
    audit.record(
        session, principal, "case.assign", "case", case.id, case_id=case.id, detail={"user_id": user_id}
    )
    return case


def unassign(session: Session, principal: Principal, case_id: str, user_id: str) -> Case:
    case = get_case(session, principal, case_id, audit_read=False)
    if not (user_id == principal.id or principal.manages_facility(case.target_facility_id)):
        raise NotPermitted("only the assignee or the target facility's administrators may unassign")
    remaining = [a for a in case.assignments if a.user_id != user_id]
    if len(remaining) == len(case.assignments):
        raise ResourceNotFound("assignment", user_id)
    case.assignments = remaining
    session.flush()
    record_event(session, case, principal, EventType.unassigned, text=user_id)
    audit.record(
        session, principal, "case.unassign", "case", case.id, case_id=case.id, detail={"user_id": user_id}
    )
    return case


def add_attachment(
    session: Session,
    principal: Principal,
    store: BlobStore,
    case_id: str,
    *,
    filename: str,
    content_type: str,
    chunks: Iterable[bytes],
) -> CaseEvent:
    """Store the file content-addressed, then record it on the timeline in the same transaction."""
    case = get_case(session, principal, case_id, audit_read=False)
    if case.status is CaseStatus.closed:
        raise Conflict("the case is closed")
    ref: BlobRef = store.put_stream(chunks)
    event = record_event(
        session,
        case,
        principal,
        EventType.attachment,
        blob_sha256=ref.sha256,
        filename=filename,
        content_type=content_type,
        size=ref.size,
    )
    audit.record(session, principal, "attachment.create", "case_event", event.id, case_id=case.id)
    return event


def open_attachment(
    session: Session, principal: Principal, store: BlobStore, case_id: str, event_id: str
) -> tuple[CaseEvent, Iterator[bytes]]:
    case = get_case(session, principal, case_id, audit_read=False)
    event = repository.attachment(session, case.id, event_id)
    if event is None or event.blob_sha256 is None:
        raise ResourceNotFound("attachment", event_id)
    audit.record(session, principal, "attachment.read", "case_event", event.id, case_id=case.id)
    return event, store.open_verified(event.blob_sha256)
