"""Queries for review sessions; flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from consult_api.sessions.models import ReviewSession, SessionParticipant


def get(session: Session, session_id: str) -> ReviewSession | None:
    return session.get(ReviewSession, session_id)


def of_case(session: Session, case_id: str) -> Sequence[ReviewSession]:
    query = select(ReviewSession).where(ReviewSession.case_id == case_id)
    return session.scalars(query.order_by(ReviewSession.created_at)).all()


def participant(review: ReviewSession, user_id: str) -> SessionParticipant | None:
    return next((p for p in review.participants if p.user_id == user_id), None)


def add(session: Session, entity: object) -> None:
    session.add(entity)
    session.flush()


def flush(session: Session) -> None:
    session.flush()
