from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field, StringConstraints

from consult_api.cases.models import CaseKind, CaseStatus, EventType, Priority, Sex
from consult_api.schemas import Identifier, LongText, Output, PatchInput, RecordId, ShortText, StrictInput

Question = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5_000)]
CommentText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5_000)]


class PatientIn(StrictInput):
    identifier: Identifier = Field(description="The patient's identifier at the referring facility.")
    name: ShortText
    birth_date: date | None = None
    sex: Sex = Sex.U


class PatientRead(Output):
    id: str
    issuer_facility_id: str
    identifier: str
    name: str
    birth_date: date | None
    sex: Sex


class CaseCreate(StrictInput):
    kind: CaseKind
    target_facility_id: RecordId
    patient: PatientIn
    clinical_question: Question
    clinical_notes: LongText = ""
    urgent: bool = False
    deadline: AwareDatetime | None = None


class CaseUpdate(PatchInput):
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"deadline"})

    clinical_question: Question | None = None
    clinical_notes: LongText | None = None
    urgent: bool | None = None
    deadline: AwareDatetime | None = None


class StatusChange(StrictInput):
    status: CaseStatus
    comment: CommentText | None = None


class CommentIn(StrictInput):
    text: CommentText


class AssignmentIn(StrictInput):
    user_id: RecordId


class CaseSummary(Output):
    id: str
    kind: CaseKind
    status: CaseStatus
    priority: Priority
    urgent: bool
    deadline: datetime | None
    clinical_question: str
    referring_facility_id: str
    target_facility_id: str
    assigned_user_ids: list[str]
    created_at: datetime
    submitted_at: datetime | None
    alerts: list[str] = Field(default_factory=list, description="Worklist flags: critical_finding, overdue.")


class CaseRead(CaseSummary):
    clinical_notes: str
    patient: PatientRead
    created_by: str
    updated_at: datetime
    concluded_at: datetime | None
    closed_at: datetime | None
    allowed_transitions: list[CaseStatus] = Field(
        default_factory=list, description="Statuses the caller may move this case to now."
    )


class CasePage(Output):
    items: list[CaseSummary]
    total: int
    total_exact: bool = Field(
        default=True, description="false when counting stopped 1,000 cases past this page (show 'total+')"
    )
    limit: int
    offset: int


class EventRead(Output):
    id: str
    case_id: str
    type: EventType
    actor: str
    occurred_at: datetime
    text: str
    from_status: str | None
    to_status: str | None
    blob_sha256: str | None
    filename: str | None
    content_type: str | None
    size: int | None
