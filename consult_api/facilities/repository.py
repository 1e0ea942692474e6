"""Queries for facilities; flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from consult_api.facilities.models import Facility, Tier


def get(session: Session, facility_id: str) -> Facility | None:
    return session.get(Facility, facility_id)


def by_code(session: Session, code: str) -> Facility | None:
    return session.scalar(select(Facility).where(Facility.code == code))


def list_facilities(session: Session, tier: Tier | None, limit: int, offset: int) -> Sequence[Facility]:
    query = select(Facility).order_by(Facility.code).limit(limit).offset(offset)
    if tier is not None:
        query = query.where(Facility.tier == tier)
    return session.scalars(query).all()


def get_many(session: Session, ids: Sequence[str]) -> Sequence[Facility]:
    return session.scalars(select(Facility).where(Facility.id.in_(ids))).all()


def add(session: Session, facility: Facility) -> None:
    session.add(facility)
    session.flush()
