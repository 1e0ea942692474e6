"""Facilities of the referral network, in tiers, with the links saying who may refer to whom."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Column, ForeignKey, String, Table
from sqlalchemy.orm import Mapped, mapped_column, relationship

from consult_api.db import Base, UTCDateTime, new_id, str_enum, utcnow


class Tier(StrEnum):
    central = "central"
    provincial = "provincial"
    district = "district"
    commune = "commune"


facility_referrals = Table(
    "facility_referrals",
    Base.metadata,
    Column("from_facility_id", String(36), ForeignKey("facilities.id", ondelete="CASCADE"), primary_key=True),
    Column("to_facility_id", String(36), ForeignKey("facilities.id", ondelete="CASCADE"), primary_key=True),
)


class Facility(Base):
    __tablename__ = "facilities"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[Tier] = mapped_column(str_enum(Tier))
    province: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    refers_to: Mapped[list[Facility]] = relationship(
        secondary=facility_referrals,
        primaryjoin=lambda: Facility.id == facility_referrals.c.from_facility_id,
        secondaryjoin=lambda: Facility.id == facility_referrals.c.to_facility_id,
        lazy="selectin",
        order_by=lambda: Facility.code,
    )
