"""A review session of a case and the people invited to it.

The session's story (created, invited, joined, left, ended) goes on the case timeline and the
audit chain, so no separate event table is kept here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from consult_api.db import Base, UTCDateTime, new_id, str_enum, utcnow


class SessionStatus(StrEnum):
    scheduled = "scheduled"
    live = "live"
    ended = "ended"


class ParticipantRole(StrEnum):
    """host: runs the session; speaker: sends audio/video; attendee: receives only."""

    host = "host"
    speaker = "speaker"
    attendee = "attendee"


class ReviewSession(Base):
    __tablename__ = "review_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(16))
    """The provider chosen at creation; a running session keeps it if the configuration changes."""
    provider_room: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[SessionStatus] = mapped_column(str_enum(SessionStatus), index=True)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    record: Mapped[bool] = mapped_column(Boolean, default=False)
    """Whether the session is to be recorded; every participant must consent before joining."""
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    participants: Mapped[list[SessionParticipant]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="SessionParticipant.invited_at"
    )


class SessionParticipant(Base):
    __tablename__ = "session_participants"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("review_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    role: Mapped[ParticipantRole] = mapped_column(str_enum(ParticipantRole))
    facility_id: Mapped[str] = mapped_column(ForeignKey("facilities.id"))
    display_name: Mapped[str] = mapped_column(String(200))
    invited_by: Mapped[str] = mapped_column(String(80))
    invited_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recording_consent: Mapped[bool | None] = mapped_column(Boolean)
    """None until asked; recorded sessions admit only participants who said yes."""
