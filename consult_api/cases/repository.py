"""Queries for cases, filtered by the access rules; flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, nulls_last, select
from sqlalchemy.orm import Session

from consult_api.access import Principal, case_visibility
from consult_api.cases.models import (
    Case,
    CaseAssignment,
    CaseEvent,
    CaseKind,
    CaseStatus,
    EventType,
    Patient,
    Priority,
)


@dataclass(frozen=True)
class CaseFilter:
    statuses: Sequence[CaseStatus] = ()
    kinds: Sequence[CaseKind] = ()
    priorities: Sequence[Priority] = ()
    assigned_to: str | None = None
    referring_facility_id: str | None = None
    target_facility_id: str | None = None


def visible_case(session: Session, principal: Principal, case_id: str) -> Case | None:
    """The case if it exists and ``principal`` may see it; None otherwise (callers answer 404)."""
    return session.scalar(select(Case).where(Case.id == case_id, case_visibility(principal)))


def _filtered(principal: Principal, flt: CaseFilter) -> Select[Case]:
    query = select(Case).where(case_visibility(principal))
    if flt.statuses:
        query = query.where(Case.status.in_(flt.statuses))
    if flt.kinds:
        query = query.where(Case.kind.in_(flt.kinds))
    if flt.priorities:
        query = query.where(Case.priority.in_(flt.priorities))
    if flt.referring_facility_id:
        query = query.where(Case.referring_facility_id == flt.referring_facility_id)
    if flt.target_facility_id:
        query = query.where(Case.target_facility_id == flt.target_facility_id)
    if flt.assigned_to:
        assigned = select(CaseAssignment.case_id).where(CaseAssignment.user_id == flt.assigned_to)
        query = query.where(Case.id.in_(assigned))
    return query


COUNT_CAP = 1000
"""Counting stops this far past the page: an exact count of 10,000 visible cases cost more than the page."""


SUMMARY_COLUMNS = (
    Case.id,
    Case.kind,
    Case.status,
    Case.priority,
    Case.urgent,
    Case.deadline,
    Case.clinical_question,
    Case.referring_facility_id,
    Case.target_facility_id,
    Case.created_at,
    Case.submitted_at,
    Case.alerts,
)
"""What a worklist line shows: read as plain rows, without building an ORM object per case."""


@dataclass(frozen=True)
class WorklistPage:
    cases: Sequence[Any]
    """SQLAlchemy rows with the ``SUMMARY_COLUMNS`` by name (and ``visible``, the capped count)."""
    assigned_user_ids: dict[str, list[str]]
    total: int
    total_exact: bool


def worklist(
    session: Session, principal: Principal, flt: CaseFilter, limit: int, offset: int
) -> WorklistPage:
    """Most urgent first: priority, then the nearest deadline, then the oldest.

    The capped count rides along the page as an uncorrelated scalar subquery (evaluated once),
    so a page costs one statement plus one for its assignments.
    """
    query = _filtered(principal, flt)
    cap = offset + limit + COUNT_CAP
    count = select(func.count()).select_from(query.with_only_columns(Case.id).limit(cap + 1).subquery())
    ordered = query.order_by(Case.priority_rank, nulls_last(Case.deadline.asc()), Case.created_at)
    page = ordered.with_only_columns(*SUMMARY_COLUMNS, count.scalar_subquery().label("visible"))
    rows = session.execute(page.limit(limit).offset(offset)).all()
    counted = rows[0].visible if rows else (session.scalar(count) or 0)
    assigned = _assignees(session, [row.id for row in rows])
    return WorklistPage(rows, assigned, min(counted, cap), counted <= cap)


def _assignees(session: Session, case_ids: Sequence[str]) -> dict[str, list[str]]:
    """Case id -> assigned user ids, in assignment order, for a page of cases."""
    assigned: dict[str, list[str]] = {case_id: [] for case_id in case_ids}
    if case_ids:
        query = (
            select(CaseAssignment.case_id, CaseAssignment.user_id)
            .where(CaseAssignment.case_id.in_(case_ids))
            .order_by(CaseAssignment.assigned_at)
        )
        for case_id, user_id in session.execute(query):
            assigned[case_id].append(user_id)
    return assigned


def patient_by_identifier(session: Session, issuer_facility_id: str, identifier: str) -> Patient | None:
    return session.scalar(
        select(Patient).where(
            Patient.issuer_facility_id == issuer_facility_id, Patient.identifier == identifier
        )
    )


def timeline(session: Session, case_id: str) -> Sequence[CaseEvent]:
    return session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.occurred_at, CaseEvent.id)
    ).all()


def attachment(session: Session, case_id: str, event_id: str) -> CaseEvent | None:
    return session.scalar(
        select(CaseEvent).where(
            CaseEvent.id == event_id, CaseEvent.case_id == case_id, CaseEvent.type == EventType.attachment
        )
    )


def add(session: Session, entity: object) -> None:
    session.add(entity)
    session.flush()
