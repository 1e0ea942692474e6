"""Queries for failed-login records; flushes, never commits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from consult_api.auth.models import LoginAttempt


def failures_since(session: Session, key_hash: str, since: datetime) -> tuple[int, datetime | None]:
    """How many failures a key has had since ``since``, and when the oldest of them was."""
    count, oldest = session.execute(
        select(func.count(), func.min(LoginAttempt.attempted_at)).where(
            LoginAttempt.key_hash == key_hash, LoginAttempt.attempted_at >= since
        )
    ).one()
    if isinstance(oldest, str):  # SQLite aggregates bypass the column type
        oldest = datetime.fromisoformat(oldest)
    return int(count or 0), oldest


def add_failures(session: Session, key_hashes: Iterable[str], at: datetime) -> None:
    session.add_all(LoginAttempt(key_hash=key, attempted_at=at) for key in key_hashes)
    session.flush()


def clear(session: Session, key_hash: str) -> None:
    session.execute(delete(LoginAttempt).where(LoginAttempt.key_hash == key_hash))


def purge_before(session: Session, before: datetime) -> None:
    """Forget failures that have left every window (keeps the table small)."""
    session.execute(delete(LoginAttempt).where(LoginAttempt.attempted_at < before))
