"""The one ingest path behind STOW-RS, DIMSE C-STORE and browser uploads.

An instance is staged (fsynced temp file, hashed on the way in), its header parsed and checked, then
committed to the blob store and indexed in the caller's transaction. Same SOP Instance UID with the
same bytes is an idempotent success; with different bytes it is refused and the stored one stays.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consult_api.access import Principal, study_visibility
from consult_api.cases import service as cases
from consult_api.cases.models import Case, CaseStatus
from consult_api.db import utcnow
from consult_api.dicom import parsing, repository
from consult_api.dicom.models import Instance, Series, Study
from consult_api.dicom.parsing import DicomRejected, ParsedInstance
from consult_api.errors import Conflict, NotPermitted
from consult_api.storage.blobs import BlobStore, StagedBlob

log = logging.getLogger("consult_api.dicom")
BULK_THRESHOLD = 1024
INDEX_ATTEMPTS = 3
BULKDATA_MARKER = "bulkdata:"


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one instance: the per-instance line of a STOW response or a C-STORE status."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    failure_reason: int | None = None
    message: str = ""
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.failure_reason is None


@dataclass
class IngestContext:
    """Who is sending, for which case, through which door."""

    principal: Principal
    via: str
    case: Case | None = None
    expected_study_uid: str | None = None
    outcomes: list[StoreOutcome] = field(default_factory=list)
    defer_dir_sync: bool = False
    """Batch doors (STOW-RS, the DIMSE spool) make the whole store durable once (``sync_all``)."""
    studies: dict[str, Study] = field(default_factory=dict)
    """Studies and series this batch already checked or created, by UID: a 50-instance STOW into one
    series looks each up once, not 50 times."""
    series: dict[str, Series] = field(default_factory=dict)
    added_to_series: Counter[str] = field(default_factory=Counter)
    """Instances indexed per series UID, applied to the counters once by ``finish``."""
    study_of_series: dict[str, Study] = field(default_factory=dict)


def case_for_upload(session: Session, principal: Principal, case_id: str) -> Case:
    """A case images may be attached to: visible, sent by the caller's facility, still open."""
    case = cases.get_case(session, principal, case_id, audit_read=False)
    if not (principal.is_referrer_for(case) or principal.is_admin):
        raise NotPermitted("only the referring facility attaches images to a case")
    if case.status in (CaseStatus.concluded, CaseStatus.closed):
        raise Conflict(f"images cannot be added to a {case.status} case")
    return case


def _failure(exc: DicomRejected, parsed: ParsedInstance | None = None) -> StoreOutcome:
    return StoreOutcome(
        sop_class_uid=parsed.sop_class_uid if parsed else "",
        sop_instance_uid=parsed.sop_instance_uid if parsed else "",
        study_instance_uid=parsed.study_instance_uid if parsed else "",
        failure_reason=exc.reason,
        message=exc.message,
    )


def _success(parsed: ParsedInstance, *, duplicate: bool = False) -> StoreOutcome:
    return StoreOutcome(
        sop_class_uid=parsed.sop_class_uid,
        sop_instance_uid=parsed.sop_instance_uid,
        study_instance_uid=parsed.study_instance_uid,
        series_instance_uid=parsed.series_instance_uid,
        duplicate=duplicate,
    )


def _text(parsed: ParsedInstance, keyword: str, limit: int) -> str:
    value = parsed.get(keyword, "")
    return str(value if value is not None else "").strip()[:limit]


def _int(parsed: ParsedInstance, keyword: str) -> int | None:
    value = parsed.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _check_existing(session: Session, parsed: ParsedInstance, staged: StagedBlob) -> Instance | None:
    existing = repository.instance_by_uid(session, parsed.sop_instance_uid)
    if existing is not None and existing.blob_sha256 != staged.ref.sha256:
        raise _different_content(parsed)
    return existing


def _different_content(parsed: ParsedInstance) -> DicomRejected:
    return DicomRejected(
        parsing.DUPLICATE_INSTANCE,
        f"SOP Instance {parsed.sop_instance_uid} is already stored with different content; "
        "the stored one is kept",
    )


@dataclass
class Admissions:
    """What one sender was already found allowed to add to, so each study and series is looked up once."""

    studies: set[str] = field(default_factory=set)
    """Study UIDs checked (stored and visible to the sender, or not stored yet)."""
    series_studies: dict[str, str] = field(default_factory=dict)
    """Series UID -> the Study UID it was admitted under."""


def check_admissible(
    connection: Connection, principal: Principal, admitted: Admissions, parsed: ParsedInstance
) -> str | None:
    """``store_parsed``'s verdict, read-only, for a door that acknowledges before it indexes.

    Returns the sha256 already stored under the SOP Instance UID (None: a new instance), for
    ``is_duplicate`` to judge once the instance's own digest is known: the check can run on the
    header while the pixels are still arriving. Raises ``DicomRejected`` for a study of another
    facility or a series indexed under another study. ``admitted`` remembers what passed, so an
    association looks its study and series up once, not once per instance. Plain column reads on a
    connection: this runs for every instance before its answer.
    """
    known: str | None = connection.scalar(_DIGEST_BY_UID, {"uid": parsed.sop_instance_uid})
    if known is not None:
        return known  # a re-send or a conflict, whatever its study says
    study_uid = parsed.study_instance_uid
    if study_uid not in admitted.studies:
        study_id = connection.scalar(select(Study.id).where(Study.study_instance_uid == study_uid))
        if study_id is not None:
            visible = select(Study.id).where(Study.id == study_id, study_visibility(principal))
            if connection.scalar(visible) is None:
                raise DicomRejected(parsing.NOT_AUTHORIZED, "the study belongs to another facility")
        admitted.studies.add(study_uid)
    series_uid = parsed.series_instance_uid
    admitted_under = admitted.series_studies.get(series_uid)
    if admitted_under is None:
        # Compared by Study Instance UID, not row id: another door may create the study and the
        # series between two lookups here, and a study this sender creates has no id yet.
        indexed_under = connection.scalar(
            select(Study.study_instance_uid).join(Series).where(Series.series_instance_uid == series_uid)
        )
        if indexed_under is not None and indexed_under != study_uid:
            raise DicomRejected(parsing.DATASET_DOES_NOT_MATCH, "the series is indexed under another study")
    elif admitted_under != study_uid:
        raise DicomRejected(parsing.DATASET_DOES_NOT_MATCH, "the series was sent under another study")
    admitted.series_studies[series_uid] = study_uid
    return None


def is_duplicate(stored_sha256: str | None, sha256: str, parsed: ParsedInstance) -> bool:
    """True for the same bytes stored again (an idempotent success); raises for different bytes."""
    if stored_sha256 is None:
        return False
    if stored_sha256 != sha256:
        raise _different_content(parsed)
    return True


_DIGEST_BY_UID = select(Instance.blob_sha256).where(Instance.sop_instance_uid == bindparam("uid"))


def _study_for(session: Session, ctx: IngestContext, parsed: ParsedInstance) -> Study:
    cached = ctx.studies.get(parsed.study_instance_uid)
    if cached is not None:
        return cached  # already checked for this caller and case
    study = repository.study_by_uid(session, parsed.study_instance_uid)
    if study is None:
        study = Study(
            study_instance_uid=parsed.study_instance_uid,
            facility_id=ctx.principal.facility_id,
            case_id=ctx.case.id if ctx.case else None,
        )
        _fill_study(study, parsed)
        repository.add(session, study)
        return study
    if not _may_add_to(session, ctx.principal, study):
        raise DicomRejected(parsing.NOT_AUTHORIZED, "the study belongs to another facility")
    if ctx.case is not None:
        if study.case_id not in (None, ctx.case.id):
            raise DicomRejected(parsing.PROCESSING_FAILURE, "the study is attached to another case")
        study.case_id = ctx.case.id
    return study


def _may_add_to(session: Session, principal: Principal, study: Study) -> bool:
    if study.facility_id == principal.facility_id:
        return True
    query = select(Study.id).where(Study.id == study.id, study_visibility(principal))
    return session.scalar(query) is not None


def _fill_study(study: Study, parsed: ParsedInstance) -> None:
    study.patient_id = _text(parsed, "PatientID", 64)
    study.patient_name = _text(parsed, "PatientName", 200)
    study.patient_birth_date = _text(parsed, "PatientBirthDate", 8)
    study.patient_sex = _text(parsed, "PatientSex", 16)
    study.study_date = _text(parsed, "StudyDate", 8)
    study.study_time = _text(parsed, "StudyTime", 16)
    study.accession_number = _text(parsed, "AccessionNumber", 16)
    study.study_id = _text(parsed, "StudyID", 16)
    study.study_description = _text(parsed, "StudyDescription", 64)
    study.referring_physician_name = _text(parsed, "ReferringPhysicianName", 200)


def _series_for(session: Session, ctx: IngestContext, study: Study, parsed: ParsedInstance) -> Series:
    series = ctx.series.get(parsed.series_instance_uid) or repository.series_by_uid(
        session, parsed.series_instance_uid
    )
    if series is not None:
        if series.study_id != study.id:
            raise DicomRejected(parsing.DATASET_DOES_NOT_MATCH, "the series is indexed under another study")
        return series
    series = Series(
        series_instance_uid=parsed.series_instance_uid,
        study_id=study.id,
        modality=_text(parsed, "Modality", 16),
        series_number=_int(parsed, "SeriesNumber"),
        series_description=_text(parsed, "SeriesDescription", 64),
        body_part_examined=_text(parsed, "BodyPartExamined", 16),
    )
    repository.add(session, series)
    study.number_of_series = Study.number_of_series + 1
    if series.modality and series.modality not in study.modalities:
        study.modalities = sorted([*study.modalities, series.modality])
    return series


def header_json(dataset: Dataset) -> dict[str, Any]:
    """DICOM JSON of the header; large binary values become markers resolved to URIs when served."""

    def bulk(element: DataElement) -> str:
        return f"{BULKDATA_MARKER}{element.tag:08X}"

    result: dict[str, Any] = dataset.to_json_dict(BULK_THRESHOLD, bulk)
    return result


def cached_header(store: BlobStore, instance: Instance) -> dict[str, Any]:
    """The instance's header as DICOM JSON, built on first use and kept on the row.

    Building it costs ~3 ms of pydicom per instance, a third of the ingest CPU; deferring it to the
    first metadata request keeps C-STORE and STOW fast and pays once per instance actually viewed.
    """
    if not instance.dicom_json:
        data = b"".join(store.open_verified(instance.blob_sha256))
        instance.dicom_json = header_json(parsing.parse_bytes(data))
    return instance.dicom_json


def _index(
    session: Session, ctx: IngestContext, parsed: ParsedInstance, staged: StagedBlob, *, flush: bool = True
) -> tuple[Study, Series]:
    study = _study_for(session, ctx, parsed)
    series = _series_for(session, ctx, study, parsed)
    instance = Instance(
        sop_instance_uid=parsed.sop_instance_uid,
        sop_class_uid=parsed.sop_class_uid,
        series_id=series.id,
        instance_number=_int(parsed, "InstanceNumber"),
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        blob_sha256=staged.ref.sha256,
        size=staged.ref.size,
        rows=_int(parsed, "Rows"),
        columns=_int(parsed, "Columns"),
        number_of_frames=_int(parsed, "NumberOfFrames") or 1,
        dicom_json={},  # filled on first use: see cached_header
        received_via=ctx.via,
    )
    if flush:
        repository.add(session, instance)
    else:
        session.add(instance)  # the batch flushes all its instances in one INSERT
    return study, series


def _remember(ctx: IngestContext, study: Study, series: Series) -> None:
    """A rolled-back savepoint's new study or series rows are gone, so only released ones count."""
    ctx.studies[study.study_instance_uid] = study
    ctx.series[series.series_instance_uid] = series
    ctx.study_of_series[series.series_instance_uid] = study
    ctx.added_to_series[series.series_instance_uid] += 1


def finish(session: Session, ctx: IngestContext, record: Callable[..., Any]) -> None:
    """Close a request's or an association's batch: bump the counters, write one audit event.

    Counted in SQL, not read-modify-write in Python, so concurrent requests into one study add up;
    and once per series per batch rather than per instance (two UPDATEs fewer per instance).
    """
    now = utcnow()
    for series_uid, added in ctx.added_to_series.items():
        series, study = ctx.series[series_uid], ctx.study_of_series[series_uid]
        series.number_of_instances = Series.number_of_instances + added
        study.number_of_instances = Study.number_of_instances + added
        study.last_instance_at = now
        study.completed_at = None
    session.flush()
    ctx.added_to_series.clear()
    audit_outcomes(session, ctx, record)


def _parse(ctx: IngestContext, staged: StagedBlob) -> ParsedInstance:
    return _for_request(ctx, parsing.parse_instance(staged.path))


def _for_request(ctx: IngestContext, parsed: ParsedInstance) -> ParsedInstance:
    """The instance, if it belongs where the request says (STOW-RS to ``/studies/{uid}``)."""
    if ctx.expected_study_uid and parsed.study_instance_uid != ctx.expected_study_uid:
        raise DicomRejected(parsing.DATASET_DOES_NOT_MATCH, "Study Instance UID differs from the URL's")
    return parsed


def store_staged(session: Session, store: BlobStore, ctx: IngestContext, staged: StagedBlob) -> StoreOutcome:
    """Parse, check and index one staged file inside a savepoint; the staged file is consumed."""
    outcome = _store_one(session, store, ctx, staged)
    ctx.outcomes.append(outcome)
    return outcome


def _store_one(
    session: Session,
    store: BlobStore,
    ctx: IngestContext,
    staged: StagedBlob,
    parsed: ParsedInstance | None = None,
) -> StoreOutcome:
    try:
        parsed = parsed or _parse(ctx, staged)
        for attempt in range(INDEX_ATTEMPTS):
            try:
                with session.begin_nested():
                    indexed: tuple[Study, Series] | None = None
                    if _check_existing(session, parsed, staged) is not None:
                        outcome = _success(parsed, duplicate=True)
                    else:
                        indexed = _index(session, ctx, parsed, staged)
                        # Published only once the index accepted it: a refused instance leaves no
                        # blob. Content-addressed: publishing the same bytes again is a no-op.
                        store.commit(staged, sync_dir=not ctx.defer_dir_sync)
                        outcome = _success(parsed)
                if indexed is not None:
                    _remember(ctx, *indexed)  # only once the savepoint is released
                break
            except IntegrityError:
                # Another request created the same study, series or instance between our read and
                # our insert (PostgreSQL, concurrent STOW/C-STORE): its row is committed now, so the
                # savepoint is retried and finds it.
                if attempt == INDEX_ATTEMPTS - 1:
                    raise
    except DicomRejected as exc:
        outcome = _failure(exc, parsed)
    finally:
        staged.discard()
    return outcome


def audit_outcomes(session: Session, ctx: IngestContext, record: Callable[..., Any]) -> None:
    """One audit event per request or association: which instances were stored, refused, repeated."""
    stored = [o.sop_instance_uid for o in ctx.outcomes if o.ok and not o.duplicate]
    if not ctx.outcomes:
        return
    record(
        session,
        ctx.principal,
        "dicom.store",
        "dicom_study",
        ",".join(sorted({o.study_instance_uid for o in ctx.outcomes if o.study_instance_uid}))[:64] or None,
        case_id=ctx.case.id if ctx.case else None,
        detail={
            "via": ctx.via,
            "stored": stored,
            "duplicates": [o.sop_instance_uid for o in ctx.outcomes if o.duplicate],
            "failed": [[o.sop_instance_uid, o.failure_reason] for o in ctx.outcomes if not o.ok],
        },
    )


def store_many(
    session: Session, store: BlobStore, ctx: IngestContext, staged: Sequence[StagedBlob]
) -> list[StoreOutcome]:
    """Store a request's instances; the outcomes are in the order of ``staged``, all files consumed.

    The common case (new instances into one or a few series) goes as one batch: one duplicate
    lookup for all UIDs, one savepoint and one multi-row INSERT instead of a savepoint, three
    queries and a flush per instance. Anything unusual inside the batch (a race with a concurrent
    request, a study of another facility or case, a series under another study) rolls the batch's
    savepoint back and the instances go one by one through ``store_staged``, which gives each its
    own exact outcome. Blobs are published only after the batch's rows are flushed, so a
    rolled-back batch leaves its staged files intact for the per-instance path.
    """
    return store_parsed(session, store, ctx, list(staged))


def store_parsed(
    session: Session,
    store: BlobStore,
    ctx: IngestContext,
    staged: Sequence[StagedBlob | tuple[StagedBlob, ParsedInstance]],
) -> list[StoreOutcome]:
    """``store_many`` for callers that parsed some instances already (the DIMSE spool, STOW-RS)."""
    outcomes: dict[int, StoreOutcome] = {}
    candidates: list[tuple[int, StagedBlob, ParsedInstance]] = []
    for index, item in enumerate(staged):
        blob, known = item if isinstance(item, tuple) else (item, None)
        try:
            candidates.append((index, blob, _for_request(ctx, known) if known else _parse(ctx, blob)))
        except DicomRejected as exc:
            outcomes[index] = _failure(exc)
            blob.discard()
    try:
        outcomes.update(_store_batch(session, store, ctx, candidates))
    except (IntegrityError, DicomRejected) as exc:
        log.info("ingest batch goes instance by instance", extra={"reason": type(exc).__name__})
        for index, blob, parsed in candidates:
            outcomes[index] = _store_one(session, store, ctx, blob, parsed)
    finally:
        for _position, blob, _parsed in candidates:
            blob.discard()  # no-op for published ones
    ordered = [outcomes[index] for index in range(len(staged))]
    ctx.outcomes.extend(ordered)
    return ordered


def _store_batch(
    session: Session,
    store: BlobStore,
    ctx: IngestContext,
    candidates: Sequence[tuple[int, StagedBlob, ParsedInstance]],
) -> dict[int, StoreOutcome]:
    stored = repository.instance_digests(session, [parsed.sop_instance_uid for _, _, parsed in candidates])
    outcomes: dict[int, StoreOutcome] = {}
    new: list[tuple[StagedBlob, Study, Series]] = []
    known_before = (dict(ctx.studies), dict(ctx.series))
    try:
        # No autoflush: the pending instances are not needed by the lookups (duplicates are in
        # ``stored``), and flushing them one by one is what the batch avoids.
        with session.begin_nested(), session.no_autoflush:
            for index, blob, parsed in candidates:
                known = stored.get(parsed.sop_instance_uid)
                if known is not None:  # stored before, or earlier in this same request
                    same = known == blob.ref.sha256
                    outcomes[index] = (
                        _success(parsed, duplicate=True)
                        if same
                        else _failure(_different_content(parsed), parsed)
                    )
                    continue
                stored[parsed.sop_instance_uid] = blob.ref.sha256
                study, series = _index(session, ctx, parsed, blob, flush=False)
                ctx.studies[study.study_instance_uid] = study  # the next instance skips the lookups
                ctx.series[series.series_instance_uid] = series
                new.append((blob, study, series))
                outcomes[index] = _success(parsed)
            session.flush()
    except BaseException:
        ctx.studies, ctx.series = known_before  # rows of a rolled-back savepoint are gone
        raise
    for blob, study, series in new:
        # Rows and blobs become visible together, when the request's transaction commits.
        store.commit(blob, sync_dir=not ctx.defer_dir_sync)
        _remember(ctx, study, series)
    return outcomes
