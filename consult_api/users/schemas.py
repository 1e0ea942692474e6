from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import EmailStr, Field, StringConstraints

from consult_api.access import Role
from consult_api.schemas import Output, PatchInput, RecordId, ShortText, StrictInput

Username = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
]
Password = Annotated[str, StringConstraints(min_length=12, max_length=256)]


class UserCreate(StrictInput):
    username: Username
    full_name: ShortText
    email: EmailStr | None = None
    password: Password
    facility_id: RecordId
    roles: list[Role] = Field(min_length=1, max_length=8)
    on_duty: bool = False


class UserUpdate(PatchInput):
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"email"})

    full_name: ShortText | None = None
    email: EmailStr | None = None
    roles: list[Role] | None = Field(default=None, min_length=1, max_length=8)
    is_active: bool | None = None
    on_duty: bool | None = None
    password: Password | None = None


class PasswordChange(StrictInput):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    new_password: Password


class UserRead(Output):
    id: str
    username: str
    full_name: str
    email: str | None
    facility_id: str
    roles: list[Role]
    is_active: bool
    on_duty: bool
    created_at: datetime
