"""Study-stable detection: a study with no new instance for N seconds is complete.

DIMSE and STOW deliver a study one instance at a time with no end marker, so completeness is a
quiet period. ``complete_quiet_studies`` flips ``completed_at`` with a guarded UPDATE, so several
schedulers (API replicas, beat) can run it concurrently and each study completes exactly once; a
late instance reopens the study (ingest clears ``completed_at``) and it completes again later.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from consult_api.audit import service as audit
from consult_api.cases.models import Case, EventType
from consult_api.cases.service import record_event
from consult_api.db import utcnow
from consult_api.dicom import repository
from consult_api.dicom.models import Study


def complete_quiet_studies(session: Session, quiet_seconds: float, limit: int = 100) -> list[Study]:
    """Mark studies quiet for ``quiet_seconds`` complete; returns the ones this call completed."""
    now = utcnow()
    completed: list[Study] = []
    for study in repository.incomplete_quiet_studies(session, now - timedelta(seconds=quiet_seconds), limit):
        claimed = session.execute(
            update(Study)
            .where(
                Study.id == study.id,
                Study.completed_at.is_(None),
                Study.last_instance_at == study.last_instance_at,
            )
            .values(completed_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue
        session.refresh(study)
        _record_completion(session, study)
        completed.append(study)
    return completed


def _record_completion(session: Session, study: Study) -> None:
    detail = {"instances": study.number_of_instances, "series": study.number_of_series}
    audit.record(
        session,
        None,
        "dicom.study_complete",
        "dicom_study",
        study.study_instance_uid,
        case_id=study.case_id,
        detail=detail,
    )
    if study.case_id is None:
        return
    case = session.get(Case, study.case_id)
    if case is not None:
        text = f"Study complete: {study.number_of_instances} instances in {study.number_of_series} series"
        record_event(session, case, None, EventType.study_complete, text=text)
