"""Findings: one labelled result on a case, from a model version or a specialist, and its review.

A model finding's identity is (case, input checksum, model name, model version, label), unique in the
table, so a triage task delivered twice (acks_late re-delivery, a re-sent run) inserts nothing the
second time. Review fields record who accepted, rejected or amended it, for the training export and
the agreement statistics.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consult_api.db import Base, UTCDateTime, new_id, str_enum, utcnow


class FindingSource(StrEnum):
    model = "model"
    specialist = "specialist"


class FindingState(StrEnum):
    proposed = "proposed"
    accepted = "accepted"
    rejected = "rejected"
    amended = "amended"


class Finding(Base):
    __tablename__ = "findings"
    __table_args__ = (
        UniqueConstraint(
            "case_id",
            "input_checksum",
            "model_name",
            "model_version",
            "label",
            name="uq_findings_idempotency",
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("triage_runs.id", ondelete="SET NULL"), index=True)
    source: Mapped[FindingSource] = mapped_column(str_enum(FindingSource), default=FindingSource.model)
    model_name: Mapped[str | None] = mapped_column(String(64), index=True)
    model_version: Mapped[str | None] = mapped_column(String(32))
    input_checksum: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[str] = mapped_column(String(16), default="routine")
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    slide_id: Mapped[str | None] = mapped_column(ForeignKey("slides.id", ondelete="SET NULL"))
    location: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Where: ``slice_index``, ``sop_instance_uid``, ``bbox`` {x, y, width, height}, ``mask`` (SEG ref)."""
    heatmap_sha256: Mapped[str | None] = mapped_column(String(64))
    """Blob of the finding's heatmap as a compressed ``.npz`` (``heatmap`` float16)."""
    state: Mapped[FindingState] = mapped_column(
        str_enum(FindingState), default=FindingState.proposed, index=True
    )
    reviewer: Mapped[str | None] = mapped_column(String(80))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    review_comment: Mapped[str] = mapped_column(Text, default="")
    amended_label: Mapped[str | None] = mapped_column(String(64))
    amended_location: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
