from __future__ import annotations

from datetime import datetime
from typing import Literal

from consult_api.schemas import Output
from consult_api.triage.models import RunState, SubjectKind


class TriageRunRead(Output):
    id: str
    case_id: str
    subject_kind: SubjectKind
    series_id: str | None
    slide_id: str | None
    model_name: str
    model_version: str
    state: RunState
    attempts: int
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RetriageAccepted(Output):
    model: str
    queued: bool


ServingState = Literal["live", "candidate", "retired"]


class ModelVersionRead(Output):
    """One registered model version: what it serves, its lifecycle state and its evaluation metrics."""

    name: str
    version: str
    key: str
    state: ServingState
    """``live`` is the registry's ``active`` (the version triage routes to)."""
    task: str
    modality: str
    body_part: str
    stains: list[str]
    labels: list[str]
    metrics: dict[str, float]
    architecture: str | None
    intended_use: str
    not_for_clinical_use: bool
    onnx_sha256: str | None
