"""Schema building blocks shared by every domain's request and response models."""

from __future__ import annotations

from typing import Annotated, ClassVar, Self

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(max_length=20_000)]
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
RecordId = Annotated[str, StringConstraints(min_length=1, max_length=36)]


class StrictInput(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PatchInput(StrictInput):
    """PATCH bodies: leave a field out to keep it; ``null`` only where the column may be empty."""

    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _refuse_nulls(self) -> Self:
        nulls = sorted(f for f in self.model_fields_set - self.NULLABLE if getattr(self, f) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} may be left out but not set to null")
        return self
