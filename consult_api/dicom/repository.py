"""Queries on the DICOM index, always through the access rules; flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from consult_api.access import Principal, study_visibility
from consult_api.dicom.models import DicomNode, Instance, Series, Study


def study_by_uid(session: Session, uid: str) -> Study | None:
    return session.scalar(select(Study).where(Study.study_instance_uid == uid))


def series_by_uid(session: Session, uid: str) -> Series | None:
    return session.scalar(select(Series).where(Series.series_instance_uid == uid))


def instance_by_uid(session: Session, uid: str) -> Instance | None:
    return session.scalar(select(Instance).where(Instance.sop_instance_uid == uid))


def instance_digests(session: Session, uids: Sequence[str]) -> dict[str, str]:
    """SOP Instance UID -> sha256 of the stored file, for those of ``uids`` already indexed."""
    if not uids:
        return {}
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.blob_sha256).where(Instance.sop_instance_uid.in_(uids))
    )
    return {uid: sha for uid, sha in rows}  # noqa: C416 - Rows, not pairs, to the type checker


def visible_studies(principal: Principal) -> Select[Study]:
    return select(Study).where(study_visibility(principal))


def visible_series(principal: Principal) -> Select[Series]:
    return select(Series).join(Study, Series.study_id == Study.id).where(study_visibility(principal))


def visible_instances(principal: Principal) -> Select[Instance]:
    return (
        select(Instance)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(study_visibility(principal))
    )


def visible_study(session: Session, principal: Principal, uid: str) -> Study | None:
    return session.scalar(visible_studies(principal).where(Study.study_instance_uid == uid))


def instances_of(
    session: Session,
    principal: Principal,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Sequence[Instance]:
    """Visible instances of a study (optionally one series or one instance), in series/instance order."""
    query = visible_instances(principal).where(Study.study_instance_uid == study_uid)
    if series_uid is not None:
        query = query.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        query = query.where(Instance.sop_instance_uid == sop_uid)
    return session.scalars(
        query.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    ).all()


def studies_of_case(session: Session, case_id: str) -> Sequence[Study]:
    """The studies attached to a case, oldest study date first (then by arrival)."""
    return session.scalars(
        select(Study).where(Study.case_id == case_id).order_by(Study.study_date, Study.created_at, Study.id)
    ).all()


def series_of_studies(session: Session, study_ids: Sequence[str]) -> Sequence[Series]:
    """The series of the given studies, in series number order."""
    if not study_ids:
        return []
    return session.scalars(
        select(Series)
        .where(Series.study_id.in_(study_ids))
        .order_by(Series.study_id, Series.series_number, Series.created_at, Series.id)
    ).all()


def node_by_ae_title(session: Session, ae_title: str) -> DicomNode | None:
    return session.scalar(select(DicomNode).where(DicomNode.ae_title == ae_title))


def nodes_of(session: Session, facility_id: str) -> Sequence[DicomNode]:
    return session.scalars(
        select(DicomNode).where(DicomNode.facility_id == facility_id).order_by(DicomNode.ae_title)
    ).all()


def incomplete_quiet_studies(session: Session, quiet_before: object, limit: int = 100) -> Sequence[Study]:
    query = (
        select(Study)
        .where(Study.completed_at.is_(None), Study.last_instance_at <= quiet_before)
        .order_by(Study.last_instance_at)
        .limit(limit)
    )
    return session.scalars(query).all()


def add(session: Session, entity: object) -> None:
    session.add(entity)
    session.flush()
