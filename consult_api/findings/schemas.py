from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from consult_api.findings.models import FindingSource, FindingState
from consult_api.schemas import Output, ShortText, StrictInput


class BoxIn(StrictInput):
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class RegionIn(StrictInput):
    """A corrected region: a box on a slice (DICOM) or in level-0 pixels (slide)."""

    bbox: BoxIn
    slice_index: int | None = Field(default=None, ge=0)
    sop_instance_uid: str | None = Field(default=None, max_length=64)


class ReviewIn(StrictInput):
    comment: str = Field(default="", max_length=5_000)


class AmendIn(ReviewIn):
    label: ShortText | None = Field(default=None, max_length=64)
    region: RegionIn | None = None


class FindingRead(Output):
    id: str
    case_id: str
    source: FindingSource
    model_name: str | None
    model_version: str | None
    label: str
    score: float | None
    priority: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    slide_id: str | None
    location: dict[str, Any]
    heatmap_sha256: str | None
    state: FindingState
    reviewer: str | None
    reviewed_at: datetime | None
    review_comment: str
    amended_label: str | None
    amended_location: dict[str, Any] | None
    created_at: datetime


class LabelAgreement(Output):
    label: str
    proposed: int
    accepted: int
    rejected: int
    amended: int
    reviewed: int
    agreement: float | None = Field(description="accepted / reviewed; None before any review")


class ModelAgreement(Output):
    model_name: str
    model_version: str
    findings: int
    reviewed: int
    accepted: int
    rejected: int
    amended: int
    agreement: float | None = Field(description="accepted / reviewed; None before any review")
    labels: list[LabelAgreement]
