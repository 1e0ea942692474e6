"""A whole-slide image attached to a case.

The file itself lives in the blob store under its sha256 (the upload as received: a single slide
file or a zip of a multi-file slide); a serving folder under ``data_dir/slides/<sha256>`` holds
what OpenSlide opens (a link to the blob with its original extension, or the unpacked archive).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from consult_api.db import Base, UTCDateTime, new_id, str_enum, utcnow


class SlideStatus(StrEnum):
    """Ingest is synchronous: a slide row exists only once OpenSlide has opened and read it."""

    ready = "ready"


class Slide(Base):
    __tablename__ = "slides"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    status: Mapped[SlideStatus] = mapped_column(str_enum(SlideStatus), default=SlideStatus.ready)
    filename: Mapped[str] = mapped_column(String(255))
    blob_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    entry: Mapped[str] = mapped_column(String(1024))
    vendor: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    level_count: Mapped[int] = mapped_column(Integer)
    levels: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    mpp_x: Mapped[float | None] = mapped_column(Float)
    mpp_y: Mapped[float | None] = mapped_column(Float)
    objective_power: Mapped[float | None] = mapped_column(Float)
    associated_images: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
