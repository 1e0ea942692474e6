"""Failed logins, kept in the database so every API replica sees the same count.

A row is one failed attempt against one throttling key: a username or a client address. Only a
hash of the key is stored: people sometimes type their password into the username field, and a
table of failed usernames would otherwise collect them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from consult_api.db import Base, UTCDateTime, utcnow


class LoginAttempt(Base):
    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_key_hash_attempted_at", "key_hash", "attempted_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
