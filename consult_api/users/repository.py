"""Queries for users and API keys; flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consult_api.users.models import ApiKey, User


def get(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.username) == username.lower()))


def list_users(session: Session, facility_id: str | None, limit: int, offset: int) -> Sequence[User]:
    query = select(User).order_by(User.username).limit(limit).offset(offset)
    if facility_id is not None:
        query = query.where(User.facility_id == facility_id)
    return session.scalars(query).all()


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def add(session: Session, entity: User | ApiKey) -> None:
    session.add(entity)
    session.flush()


def api_key_by_prefix(session: Session, prefix: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))


def api_keys_of(session: Session, facility_id: str) -> Sequence[ApiKey]:
    return session.scalars(
        select(ApiKey).where(ApiKey.facility_id == facility_id).order_by(ApiKey.created_at)
    ).all()
