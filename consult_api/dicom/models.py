"""The DICOM index: Study / Series / Instance rows pointing at Part-10 blobs, and DICOM nodes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from consult_api.db import Base, UTCDateTime, new_id, utcnow


class Study(Base):
    __tablename__ = "dicom_studies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    facility_id: Mapped[str] = mapped_column(ForeignKey("facilities.id"), index=True)
    case_id: Mapped[str | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"), index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_name: Mapped[str] = mapped_column(String(200), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(200), default="")
    modalities: Mapped[list[str]] = mapped_column(JSON, default=list)
    number_of_series: Mapped[int] = mapped_column(Integer, default=0)
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_instance_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class Series(Base):
    __tablename__ = "dicom_series"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("dicom_studies.id", ondelete="CASCADE"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    study: Mapped[Study] = relationship(lazy="joined")


class Instance(Base):
    __tablename__ = "dicom_instances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_id: Mapped[str] = mapped_column(ForeignKey("dicom_series.id", ondelete="CASCADE"), index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)
    dicom_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_via: Mapped[str] = mapped_column(String(16), default="stow")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    series: Mapped[Series] = relationship(lazy="joined")


class DicomNode(Base):
    """A facility's DICOM application entity: who may associate, and where C-MOVE sends."""

    __tablename__ = "dicom_nodes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    facility_id: Mapped[str] = mapped_column(ForeignKey("facilities.id", ondelete="CASCADE"), index=True)
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    may_store: Mapped[bool] = mapped_column(Boolean, default=True)
    may_query: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
