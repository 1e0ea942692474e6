"""Queries for opinions; flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from consult_api.opinions.models import Opinion


def of_case(session: Session, case_id: str) -> Sequence[Opinion]:
    return session.scalars(
        select(Opinion).where(Opinion.case_id == case_id).order_by(Opinion.created_at)
    ).all()


def get(session: Session, case_id: str, opinion_id: str) -> Opinion | None:
    return session.scalar(select(Opinion).where(Opinion.id == opinion_id, Opinion.case_id == case_id))


def add(session: Session, entity: object) -> None:
    session.add(entity)
    session.flush()
