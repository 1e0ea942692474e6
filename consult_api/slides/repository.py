"""Queries for slides, filtered by the visibility of their case; flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consult_api.access import Principal, case_visibility
from consult_api.cases.models import Case
from consult_api.slides.models import Slide


def visible_slide(session: Session, principal: Principal, slide_id: str) -> Slide | None:
    """The slide if it exists and its case is visible to ``principal``; None otherwise (404)."""
    query = select(Slide).join(Case, Case.id == Slide.case_id)
    return session.scalar(query.where(Slide.id == slide_id, case_visibility(principal)))


def visible_slides(
    session: Session, principal: Principal, case_id: str | None, limit: int, offset: int
) -> tuple[Sequence[Slide], int]:
    query = select(Slide).join(Case, Case.id == Slide.case_id).where(case_visibility(principal))
    if case_id is not None:
        query = query.where(Slide.case_id == case_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Slide.created_at.desc(), Slide.id).limit(limit).offset(offset))
    return rows.all(), total


def by_sha256(session: Session, sha256: str) -> Slide | None:
    return session.scalar(select(Slide).where(Slide.blob_sha256 == sha256).limit(1))


def add(session: Session, slide: Slide) -> None:
    session.add(slide)
    session.flush()
