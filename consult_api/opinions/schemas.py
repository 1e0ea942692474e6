from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints

from consult_api.opinions.models import OpinionStatus
from consult_api.schemas import LongText, Output, StrictInput

AddendumText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]


class OpinionDraft(StrictInput):
    findings: LongText = ""
    impression: LongText = ""
    recommendations: LongText = ""


class OpinionEdit(StrictInput):
    findings: LongText | None = None
    impression: LongText | None = None
    recommendations: LongText | None = None


class AddendumIn(StrictInput):
    text: AddendumText


class AddendumRead(Output):
    id: str
    author_id: str
    text: str
    created_at: datetime


class OpinionRead(Output):
    id: str
    case_id: str
    author_id: str
    findings: str
    impression: str
    recommendations: str
    status: OpinionStatus
    created_at: datetime
    updated_at: datetime
    signed_at: datetime | None
    content_sha256: str | None
    addenda: list[AddendumRead]
