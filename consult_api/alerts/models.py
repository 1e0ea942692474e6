"""One alert per (case, kind): raised once, notified until delivered, shown as a worklist flag."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consult_api.db import Base, UTCDateTime, new_id, str_enum, utcnow


class AlertKind(StrEnum):
    critical_finding = "critical_finding"
    overdue = "overdue"


class CaseAlert(Base):
    __tablename__ = "case_alerts"
    __table_args__ = (UniqueConstraint("case_id", "kind", name="uq_case_alerts_case_kind"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[AlertKind] = mapped_column(str_enum(AlertKind, length=32))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    """User ids notified (on-duty specialists; facility admins too when overdue)."""
    delivery: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Per channel: ``{"webhook": "ok" | error, "email": "ok" | error | "skipped"}``."""
