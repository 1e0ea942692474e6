"""A triage run: one model version on one input (a DICOM series or a slide) of one case.

The row is written in the same transaction that decides to triage, before any message is sent, so
the database, not the broker, is the record of work owed: a message lost with a broker that was
down, or with a worker killed -9 on a broker that cannot re-deliver, is re-sent by the periodic
sweep (pending too long, or running past its lease). (case, input checksum, model, version) is
unique, so deciding twice never runs twice.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consult_api.db import Base, UTCDateTime, new_id, str_enum, utcnow


class RunState(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class SubjectKind(StrEnum):
    series = "series"
    slide = "slide"


class TriageRun(Base):
    __tablename__ = "triage_runs"
    __table_args__ = (
        UniqueConstraint(
            "case_id", "input_checksum", "model_name", "model_version", name="uq_triage_runs_idempotency"
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    subject_kind: Mapped[SubjectKind] = mapped_column(str_enum(SubjectKind))
    series_id: Mapped[str | None] = mapped_column(
        ForeignKey("dicom_series.id", ondelete="CASCADE"), index=True
    )
    slide_id: Mapped[str | None] = mapped_column(ForeignKey("slides.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(32))
    input_checksum: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(32))
    state: Mapped[RunState] = mapped_column(str_enum(RunState), default=RunState.pending, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
