"""Queries for findings; flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consult_api.findings.models import Finding, FindingSource, FindingState


def for_case(session: Session, case_id: str) -> Sequence[Finding]:
    return session.scalars(
        select(Finding).where(Finding.case_id == case_id).order_by(Finding.created_at, Finding.id)
    ).all()


def in_case(session: Session, case_id: str, finding_id: str) -> Finding | None:
    return session.scalar(select(Finding).where(Finding.id == finding_id, Finding.case_id == case_id))


def by_key(session: Session, finding: Finding) -> Finding | None:
    return session.scalar(
        select(Finding).where(
            Finding.case_id == finding.case_id,
            Finding.input_checksum == finding.input_checksum,
            Finding.model_name == finding.model_name,
            Finding.model_version == finding.model_version,
            Finding.label == finding.label,
        )
    )


def add_once(session: Session, finding: Finding) -> bool:
    """Insert unless the same (case, input, model version, label) exists; True if inserted.

    The savepoint makes a concurrent duplicate (two deliveries racing) a no-op, not an error.
    """
    if by_key(session, finding) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(finding)
            session.flush()
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True)
class AgreementRow:
    model_name: str
    model_version: str
    label: str
    state: FindingState
    count: int


def agreement_counts(session: Session) -> list[AgreementRow]:
    """Model findings counted per (model name, version, label, review state)."""
    rows = session.execute(
        select(Finding.model_name, Finding.model_version, Finding.label, Finding.state, func.count())
        .where(Finding.source == FindingSource.model)
        .group_by(Finding.model_name, Finding.model_version, Finding.label, Finding.state)
        .order_by(Finding.model_name, Finding.model_version, Finding.label)
    ).all()
    return [AgreementRow(r[0] or "", r[1] or "", r[2], FindingState(r[3]), int(r[4])) for r in rows]
