from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints

from consult_api.facilities.models import Tier
from consult_api.schemas import Output, PatchInput, RecordId, ShortText, StrictInput

FacilityCode = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Z0-9][A-Z0-9_-]{1,31}$")
]


class FacilityCreate(StrictInput):
    code: FacilityCode
    name: ShortText
    tier: Tier
    province: ShortText | None = None


class FacilityUpdate(PatchInput):
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"province"})

    name: ShortText | None = None
    province: ShortText | None = None
    active: bool | None = None


class ReferralTargets(StrictInput):
    facility_ids: list[RecordId] = Field(max_length=500)


class FacilityRead(Output):
    id: str
    code: str
    name: str
    tier: Tier
    province: str | None
    active: bool
    created_at: datetime
    refers_to: list[str]


class ApiKeyCreate(StrictInput):
    name: ShortText


class ApiKeyRead(Output):
    id: str
    facility_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyIssued(ApiKeyRead):
    key: str = Field(description="The secret; shown only in this response.")
