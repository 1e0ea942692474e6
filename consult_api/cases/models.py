"""Patients, cases, their assignments and their timeline."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from consult_api.db import Base, UTCDateTime, new_id, str_enum, utcnow


class CaseKind(StrEnum):
    """The six services of the national Telehealth scheme."""

    advice = "advice"
    clinical = "clinical"
    imaging = "imaging"
    pathology = "pathology"
    surgery = "surgery"
    training = "training"


class CaseStatus(StrEnum):
    draft = "draft"
    submitted = "submitted"
    triaged = "triaged"
    in_review = "in_review"
    needs_info = "needs_info"
    concluded = "concluded"
    closed = "closed"


class Priority(StrEnum):
    routine = "routine"
    urgent = "urgent"
    critical = "critical"


PRIORITY_RANK = {Priority.critical: 0, Priority.urgent: 1, Priority.routine: 2}


class Sex(StrEnum):
    """DICOM Patient's Sex (0010,0040) values."""

    M = "M"
    F = "F"
    O = "O"  # noqa: E741 - the DICOM code
    U = "U"


class EventType(StrEnum):
    created = "created"
    status_changed = "status_changed"
    comment = "comment"
    attachment = "attachment"
    assigned = "assigned"
    unassigned = "unassigned"
    opinion_signed = "opinion_signed"
    addendum = "addendum"
    study_complete = "study_complete"
    ai_findings = "ai_findings"
    triage_failed = "triage_failed"
    alert = "alert"
    session_created = "session_created"
    session_invited = "session_invited"
    session_joined = "session_joined"
    session_left = "session_left"
    session_ended = "session_ended"


class Patient(Base):
    """A patient as identified by the facility that issued the identifier."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("issuer_facility_id", "identifier"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    issuer_facility_id: Mapped[str] = mapped_column(ForeignKey("facilities.id"), index=True)
    identifier: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[Sex] = mapped_column(str_enum(Sex), default=Sex.U)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Case(Base):
    __tablename__ = "cases"
    # The worklist's order: PostgreSQL walks this index and stops after a page instead of sorting.
    __table_args__ = (Index("ix_cases_worklist", "priority_rank", "deadline", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[CaseKind] = mapped_column(str_enum(CaseKind), index=True)
    status: Mapped[CaseStatus] = mapped_column(str_enum(CaseStatus), default=CaseStatus.draft, index=True)
    priority: Mapped[Priority] = mapped_column(str_enum(Priority), default=Priority.routine)
    priority_rank: Mapped[int] = mapped_column(Integer, default=PRIORITY_RANK[Priority.routine])
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    clinical_question: Mapped[str] = mapped_column(Text)
    clinical_notes: Mapped[str] = mapped_column(Text, default="")
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"), index=True)
    referring_facility_id: Mapped[str] = mapped_column(ForeignKey("facilities.id"), index=True)
    target_facility_id: Mapped[str] = mapped_column(ForeignKey("facilities.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    concluded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    alerts: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Worklist flags raised by the alerts service (``critical_finding``, ``overdue``)."""

    patient: Mapped[Patient] = relationship(lazy="joined")
    assignments: Mapped[list[CaseAssignment]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="CaseAssignment.assigned_at"
    )


class CaseAssignment(Base):
    __tablename__ = "case_assignments"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    assigned_by: Mapped[str] = mapped_column(String(80))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CaseEvent(Base):
    """One line of a case's timeline: comments, status changes, attachments, assignments."""

    __tablename__ = "case_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    type: Mapped[EventType] = mapped_column(str_enum(EventType))
    actor: Mapped[str] = mapped_column(String(80))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    text: Mapped[str] = mapped_column(Text, default="")
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    blob_sha256: Mapped[str | None] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(100))
    size: Mapped[int | None] = mapped_column(Integer)
