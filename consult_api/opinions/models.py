"""A specialist's opinion on a case; immutable once signed, amended only by addenda."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from consult_api.db import Base, UTCDateTime, new_id, str_enum, utcnow


class OpinionStatus(StrEnum):
    draft = "draft"
    signed = "signed"


class Opinion(Base):
    __tablename__ = "opinions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    findings: Mapped[str] = mapped_column(Text, default="")
    impression: Mapped[str] = mapped_column(Text, default="")
    recommendations: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[OpinionStatus] = mapped_column(str_enum(OpinionStatus), default=OpinionStatus.draft)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    content_sha256: Mapped[str | None] = mapped_column(String(64))

    addenda: Mapped[list[Addendum]] = relationship(
        lazy="selectin", order_by="Addendum.created_at", cascade="all, delete-orphan"
    )


class Addendum(Base):
    __tablename__ = "opinion_addenda"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    opinion_id: Mapped[str] = mapped_column(ForeignKey("opinions.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
