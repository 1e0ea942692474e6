"""Triage orchestration: decide what to run (routing), run it, and put the results on the case.

Three phases per run, so no database transaction is held while a network computes (SQLite has one
writer, and a study can take minutes):

1. ``plan_*`` (in a transaction): route the series or slide to the active model cards and write one
   ``TriageRun`` per (input, model version); the caller enqueues them after commit.
2. ``begin_run`` (short transaction) leases the run and returns a ``RunInput``; ``compute_*`` runs
   the pipeline with no database at all.
3. ``finish_run`` (in a transaction): findings (idempotent), SR/SEG through the DICOM ingest path,
   priority, ``triaged``, timeline and audit; or ``fail_run`` with the reason.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consult_api.access import Principal, Role
from consult_api.alerts import service as alerts
from consult_api.alerts.models import AlertKind
from consult_api.audit import service as audit
from consult_api.cases import service as cases
from consult_api.cases.models import Case, CaseStatus, EventType, Priority
from consult_api.db import utcnow
from consult_api.dicom import ingest
from consult_api.dicom import repository as dicom_repository
from consult_api.dicom.models import Instance, Series, Study
from consult_api.dicom.stability import complete_quiet_studies
from consult_api.errors import Conflict, NotPermitted, ResourceNotFound
from consult_api.findings import service as findings
from consult_api.findings.models import Finding, FindingSource
from consult_api.slides import service as slides
from consult_api.slides.models import Slide
from consult_api.storage.blobs import BlobStore
from consult_api.triage.models import RunState, SubjectKind, TriageRun
from consult_api.triage.schemas import ModelVersionRead, ServingState
from inference import (
    BoundingBox,
    NothingToWriteError,
    SeriesMetadata,
    SlideMetadata,
    route,
    run_dicom_series_triage,
    run_slide_triage,
    write_seg,
    write_sr,
)
from inference import Finding as AiFinding
from inference.session import SessionFactory
from models.card import ModelCard, ModelState
from models.errors import ModelNotFoundError
from models.registry import ModelRegistry

log = logging.getLogger("consult_api.triage")

DERIVED_MODALITIES = frozenset({"SR", "SEG", "KO", "PR", "REG", "RTSTRUCT"})
"""Series that are results, not images: never triaged (our own SR/SEG would loop otherwise)."""
OPEN_STATUSES = (
    CaseStatus.draft,
    CaseStatus.submitted,
    CaseStatus.triaged,
    CaseStatus.in_review,
    CaseStatus.needs_info,
)
QUEUE_FOR = {SubjectKind.series: "triage.dicom", SubjectKind.slide: "triage.wsi"}


def triage_principal(facility_id: str) -> Principal:
    """The system acting for the DICOM ingest path: it stores SR/SEG into the study's own facility."""
    return Principal(
        kind="system", id="triage", facility_id=facility_id, roles=frozenset({Role.admin}), name="AI triage"
    )


def input_checksum(parts: Sequence[str]) -> str:
    """The identity of an input: sha256 over its blobs' digests, order-independent."""
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()


# -- 1. planning ------------------------------------------------------------------------------------


def _new_run(session: Session, run: TriageRun) -> TriageRun | None:
    """Insert the run unless the same (case, input, model version) was already decided."""
    existing = session.scalar(
        select(TriageRun.id).where(
            TriageRun.case_id == run.case_id,
            TriageRun.input_checksum == run.input_checksum,
            TriageRun.model_name == run.model_name,
            TriageRun.model_version == run.model_version,
        )
    )
    if existing is not None:
        return None
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        return None
    return run


def plan_series(
    session: Session, cards: Sequence[ModelCard], series: Series, case_id: str
) -> list[TriageRun]:
    """New runs for the cards that apply to ``series`` (none if its modality is a derived object)."""
    if series.modality.upper() in DERIVED_MODALITIES:
        return []
    rows = session.execute(
        select(Instance.blob_sha256, Instance.sop_class_uid).where(Instance.series_id == series.id)
    ).all()
    if not rows:
        return []
    metadata = SeriesMetadata(
        modality=series.modality,
        body_part_examined=series.body_part_examined or None,
        sop_class_uid=rows[0].sop_class_uid,
    )
    checksum = input_checksum([r.blob_sha256 for r in rows])
    runs = []
    for card in route(metadata, cards):
        run = TriageRun(
            case_id=case_id,
            subject_kind=SubjectKind.series,
            series_id=series.id,
            model_name=card.name,
            model_version=card.version,
            input_checksum=checksum,
            queue=QUEUE_FOR[SubjectKind.series],
        )
        if _new_run(session, run) is not None:
            runs.append(run)
    return runs


DEFAULT_SLIDE_STAIN = "H&E"
"""Slides carry no stain field yet; H&E is the routine stain, so H&E and stain-agnostic cards apply."""


def plan_slide(session: Session, cards: Sequence[ModelCard], slide: Slide) -> list[TriageRun]:
    """New runs for the slide models that apply (the stain is taken as H&E until slides record one)."""
    runs = []
    for card in route(SlideMetadata(stain=DEFAULT_SLIDE_STAIN), cards):
        run = TriageRun(
            case_id=slide.case_id,
            subject_kind=SubjectKind.slide,
            slide_id=slide.id,
            model_name=card.name,
            model_version=card.version,
            input_checksum=input_checksum([slide.blob_sha256]),
            queue=QUEUE_FOR[SubjectKind.slide],
        )
        if _new_run(session, run) is not None:
            runs.append(run)
    return runs


def plan_study(session: Session, cards: Sequence[ModelCard], study: Study) -> list[TriageRun]:
    if study.case_id is None:
        return []
    series = session.scalars(select(Series).where(Series.study_id == study.id).order_by(Series.series_number))
    return [run for s in series for run in plan_series(session, cards, s, study.case_id)]


def mark_enqueued(runs: Sequence[TriageRun]) -> list[tuple[str, str]]:
    """Stamp the runs as sent now; returns (run id, queue) pairs to send after commit."""
    now = utcnow()
    for run in runs:
        run.enqueued_at = now
    return [(run.id, run.queue) for run in runs]


def check_studies(
    session: Session, cards: Sequence[ModelCard], quiet_seconds: float
) -> list[tuple[str, str]]:
    """The "study complete" trigger: complete quiet studies and plan their series' runs."""
    runs = [
        run
        for study in complete_quiet_studies(session, quiet_seconds)
        for run in plan_study(session, cards, study)
    ]
    return mark_enqueued(runs)


def check_new_slides(session: Session, cards: Sequence[ModelCard], since: datetime) -> list[tuple[str, str]]:
    """The "slide ingested" trigger as a sweep: recent slides with no run yet are planned.

    The slides service commits a slide synchronously; this finds it on the next beat even if no one
    called ``enqueue_slide_triage`` (or the broker was down when they did).
    """
    no_run = ~exists(select(TriageRun.id).where(TriageRun.slide_id == Slide.id))
    recent = session.scalars(select(Slide).where(Slide.created_at >= since, no_run).limit(100)).all()
    return mark_enqueued([run for slide in recent for run in plan_slide(session, cards, slide)])


def slide_runs(session: Session, cards: Sequence[ModelCard], slide_id: str) -> list[tuple[str, str]]:
    slide = session.get(Slide, slide_id)
    return mark_enqueued(plan_slide(session, cards, slide)) if slide is not None else []


def sweep(session: Session, requeue_after: float) -> list[tuple[str, str]]:
    """Runs owed but apparently lost (pending too long, or running past their lease): send again.

    Re-sending is safe: a run already done is skipped, and findings are unique per input and version.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=requeue_after)
    stale = session.scalars(
        select(TriageRun)
        .where(
            or_(
                and_(
                    TriageRun.state == RunState.pending,
                    or_(TriageRun.enqueued_at.is_(None), TriageRun.enqueued_at < cutoff),
                ),
                and_(TriageRun.state == RunState.running, TriageRun.lease_until < now),
            )
        )
        .limit(500)
    ).all()
    for run in stale:
        if run.state is RunState.running:
            log.warning("triage run lease expired; re-sending", extra={"run_id": run.id})
            run.state = RunState.pending
    return mark_enqueued(stale)


# -- 2. running -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInput:
    """Everything ``compute_*`` needs, read in a short transaction: no ORM objects cross it."""

    run_id: str
    case_id: str
    kind: SubjectKind
    model_name: str
    model_version: str
    input_checksum: str
    attempts: int
    paths: tuple[Path, ...] = ()
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    slide_id: str | None = None


@dataclass(frozen=True)
class FindingData:
    """A pipeline finding reduced to what is stored: plain values and an encoded heatmap."""

    label: str
    score: float
    priority: str
    location: dict[str, Any]
    heatmap_npz: bytes | None


@dataclass(frozen=True)
class RunOutcome:
    findings: list[FindingData]
    scores: dict[str, float]
    derived: list[bytes] = field(default_factory=list)
    """Part-10 bytes of the SR (and SEG) written for the series, stored as new series in the study."""


def begin_run(
    session: Session, store: BlobStore, slide_root: Path, run_id: str, lease_seconds: float
) -> RunInput | None:
    """Lease the run for ``lease_seconds``; None if it is unknown, done or failed (nothing to do)."""
    run = session.get(TriageRun, run_id)
    if run is None or run.state in (RunState.done, RunState.failed):
        return None
    now = utcnow()
    run.state, run.started_at = RunState.running, now
    run.attempts += 1
    run.lease_until = now + timedelta(seconds=lease_seconds)
    common: dict[str, Any] = {
        "run_id": run.id,
        "case_id": run.case_id,
        "kind": run.subject_kind,
        "model_name": run.model_name,
        "model_version": run.model_version,
        "input_checksum": run.input_checksum,
        "attempts": run.attempts,
    }
    if run.subject_kind is SubjectKind.slide:
        slide = session.get(Slide, run.slide_id)
        if slide is None:
            raise ResourceNotFound("slide", run.slide_id)
        path = slides.serving_path(slide, store, slides.SlideFiles(slide_root))
        return RunInput(**common, paths=(path,), slide_id=slide.id)
    series = session.get(Series, run.series_id)
    if series is None:
        raise ResourceNotFound("series", run.series_id)
    blobs = session.scalars(select(Instance.blob_sha256).where(Instance.series_id == series.id)).all()
    return RunInput(
        **common,
        paths=tuple(store.local_path(sha) for sha in blobs),
        study_instance_uid=series.study.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
    )


def _npz(array: NDArray[Any] | None) -> bytes | None:
    if array is None:
        return None
    buffer = io.BytesIO()
    np.savez_compressed(buffer, heatmap=np.asarray(array, dtype=np.float16))
    return buffer.getvalue()


def _box(bbox: BoundingBox) -> dict[str, int]:
    return {"x": int(bbox.x), "y": int(bbox.y), "width": int(bbox.width), "height": int(bbox.height)}


def _finding_data(finding: AiFinding, **extra: Any) -> FindingData:
    bbox = finding.bbox
    return FindingData(
        label=finding.label,
        score=float(finding.score),
        priority=finding.priority.value,
        location=findings.location_json(
            sop_instance_uid=finding.sop_instance_uid,
            slice_index=finding.slice_index,
            bbox=({"x": bbox.x, "y": bbox.y, "width": bbox.width, "height": bbox.height} if bbox else None),
            **extra,
        ),
        heatmap_npz=_npz(finding.heatmap),
    )


def _part10(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def compute_series(registry: ModelRegistry, sessions: SessionFactory, job: RunInput) -> RunOutcome:
    """Run one model version on one series; writes an SR when there are findings, a SEG when masks."""
    model = registry.get(job.model_name, job.model_version)
    datasets = [pydicom.dcmread(path) for path in job.paths]
    result = run_dicom_series_triage(datasets, model.card, sessions.network(model))
    # A negative series has nothing to measure: TID 1500 needs at least one measurement group.
    derived = [_part10(write_sr(result, model.card, datasets))] if result.findings else []
    seg_uid = None
    try:
        seg = write_seg(result, model.card, datasets)
        derived.append(_part10(seg))
        seg_uid = str(seg.SOPInstanceUID)
    except NothingToWriteError:
        pass
    masked = [f.label for f in result.findings if f.mask is not None and f.mask.any()]
    data = [
        _finding_data(
            f,
            series_instance_uid=f.series_instance_uid,
            mask=(
                {"seg_sop_instance_uid": seg_uid, "segment_number": masked.index(f.label) + 1}
                if seg_uid and f.label in masked
                else None
            ),
        )
        for f in result.findings
    ]
    return RunOutcome(findings=data, scores=result.scores, derived=derived)


def compute_slide(registry: ModelRegistry, sessions: SessionFactory, job: RunInput) -> RunOutcome:
    """Run one slide model version on one slide (no DICOM objects: the heatmap is the overlay)."""
    model = registry.get(job.model_name, job.model_version)
    result = run_slide_triage(job.paths[0], model.card, sessions.network(model))
    data = [
        _finding_data(
            f,
            tile_size_level0=result.tile_size_level0,
            dimensions=list(result.dimensions),
            top_tiles=[
                {**_box(t.bbox), "score": round(float(t.score), 4)}
                for t in result.top_tiles
                if t.label == f.label
            ],
        )
        for f in result.findings
    ]
    return RunOutcome(findings=data, scores=result.scores)


# -- 3. results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinishResult:
    inserted: int
    alert_ids: list[str]


def finish_run(session: Session, store: BlobStore, job: RunInput, outcome: RunOutcome) -> FinishResult:
    """Store the results of a run once; a second delivery of a finished run changes nothing."""
    run = session.get(TriageRun, job.run_id)
    if run is None or run.state is RunState.done:
        return FinishResult(0, [])
    case = session.get(Case, run.case_id)
    if case is None:
        raise ResourceNotFound("case", run.case_id)
    rows = [_finding_row(store, job, run, f) for f in outcome.findings]
    inserted = findings.store_model_findings(session, rows)
    stored = _store_derived(session, store, case, job.study_instance_uid, outcome.derived)
    _apply_priority(session, case, [f.priority for f in outcome.findings])
    summary = _summary(job, outcome)
    if case.status is CaseStatus.submitted:
        cases.transition(session, None, case, CaseStatus.triaged, comment=summary)
    if inserted or not outcome.findings:  # a re-run that found the same findings adds no line
        cases.record_event(session, case, None, EventType.ai_findings, text=summary)
    audit.record(
        session,
        None,
        "triage.complete",
        "triage_run",
        run.id,
        case_id=case.id,
        detail={
            "model": f"{run.model_name}@{run.model_version}",
            "findings": len(inserted),
            "derived_instances": stored,
            "priority": case.priority.value,
        },
    )
    run.state, run.finished_at, run.lease_until, run.error = RunState.done, utcnow(), None, ""
    alert_ids = []
    critical = [f for f in outcome.findings if f.priority == Priority.critical.value]
    if critical:
        worst = critical[0]
        reason = (
            f"critical AI finding: {worst.label} ({worst.score:.2f}) by {run.model_name}@{run.model_version}"
        )
        alert = alerts.raise_alert(session, case, AlertKind.critical_finding, reason)
        if alert is not None:
            alert_ids.append(alert.id)
    return FinishResult(len(inserted), alert_ids)


def _finding_row(store: BlobStore, job: RunInput, run: TriageRun, data: FindingData) -> Finding:
    heatmap = store.put_stream([data.heatmap_npz]).sha256 if data.heatmap_npz else None
    return Finding(
        case_id=run.case_id,
        run_id=run.id,
        source=FindingSource.model,
        model_name=run.model_name,
        model_version=run.model_version,
        input_checksum=run.input_checksum,
        label=data.label,
        score=data.score,
        priority=data.priority,
        study_instance_uid=job.study_instance_uid,
        series_instance_uid=job.series_instance_uid,
        slide_id=job.slide_id,
        location=data.location,
        heatmap_sha256=heatmap,
    )


def _store_derived(
    session: Session, store: BlobStore, case: Case, study_uid: str | None, objects: Sequence[bytes]
) -> list[str]:
    """SR/SEG into the study through the one ingest path; our own results do not reopen the study."""
    if not objects or study_uid is None:
        return []
    study = dicom_repository.study_by_uid(session, study_uid)
    if study is None:
        return []
    completed_at, last_instance_at = study.completed_at, study.last_instance_at
    ctx = ingest.IngestContext(principal=triage_principal(study.facility_id), via="triage", case=case)
    for data in objects:
        ingest.store_staged(session, store, ctx, store.stage([data]))
    ingest.finish(session, ctx, audit.record)
    study.completed_at, study.last_instance_at = completed_at, last_instance_at  # after finish's stamp
    failed = [o.message for o in ctx.outcomes if not o.ok]
    if failed:
        log.warning("AI result objects refused by ingest", extra={"case_id": case.id, "count": len(failed)})
    return [o.sop_instance_uid for o in ctx.outcomes if o.ok]


def _apply_priority(session: Session, case: Case, ai_priorities: Sequence[str]) -> None:
    """Raise the priority (never lower it) and pull the deadline in to the new turnaround."""
    priority = findings.combined_priority(case, ai_priorities)
    if priority is case.priority:
        return
    cases._set_priority(case, priority)
    due = utcnow() + cases.TURNAROUND[priority]
    if case.deadline is None or due < case.deadline:
        case.deadline = due
    session.flush()


def _summary(job: RunInput, outcome: RunOutcome) -> str:
    model = f"{job.model_name}@{job.model_version}"
    if not outcome.findings:
        return f"AI triage {model}: no finding above the report threshold"
    parts = ", ".join(f"{f.label} {f.score:.2f} ({f.priority})" for f in outcome.findings)
    return f"AI triage {model}: {parts}"


def fail_run(session: Session, run_id: str, reason: str) -> None:
    """A permanent failure: the run is failed and the case's timeline says why."""
    run = session.get(TriageRun, run_id)
    if run is None or run.state is RunState.done:
        return
    run.state, run.finished_at, run.lease_until = RunState.failed, utcnow(), None
    run.error = reason[:2000]
    case = session.get(Case, run.case_id)
    if case is None:
        return
    text = f"AI triage {run.model_name}@{run.model_version} failed: {reason}"[:5000]
    cases.record_event(session, case, None, EventType.triage_failed, text=text)
    audit.record(
        session,
        None,
        "triage.failed",
        "triage_run",
        run.id,
        case_id=case.id,
        outcome="failure",
        detail={"model": f"{run.model_name}@{run.model_version}", "reason": reason[:500]},
    )


# -- re-triage and reading ----------------------------------------------------------------------------


STATE_NAMES: dict[ModelState, ServingState] = {
    ModelState.ACTIVE: "live",
    ModelState.CANDIDATE: "candidate",
    ModelState.RETIRED: "retired",
}


def model_versions(session: Session, principal: Principal, registry: ModelRegistry) -> list[ModelVersionRead]:
    """Every registered model version (ML engineers and administrators), by name then version."""
    if not principal.has_any(Role.ml_engineer, Role.admin):
        raise NotPermitted("the model registry is for ML engineers and administrators")
    audit.record(session, principal, "model.list", "model", None)
    return [
        ModelVersionRead(
            name=m.card.name,
            version=m.card.version,
            key=m.card.key,
            state=STATE_NAMES[m.state],
            task=m.card.task.value,
            modality=", ".join(m.card.serves.modalities),
            body_part=", ".join(m.card.serves.body_parts),
            stains=list(m.card.serves.stains),
            labels=list(m.card.labels),
            metrics=dict(m.card.metrics),
            architecture=m.card.architecture,
            intended_use=m.card.intended_use,
            not_for_clinical_use=m.card.not_for_clinical_use,
            onnx_sha256=m.card.onnx_sha256,
        )
        for m in registry.list_models()
    ]


def check_retriage(principal: Principal, registry: ModelRegistry, name: str, version: str) -> ModelCard:
    """Only ML engineers and administrators ask for it, and only for the promoted (active) version."""
    if not principal.has_any(Role.ml_engineer, Role.admin):
        raise NotPermitted("re-triage is for ML engineers and administrators")
    try:
        model = registry.get(name, version)
    except ModelNotFoundError as exc:
        raise ResourceNotFound("model", f"{name}@{version}") from exc
    if model.state is not ModelState.ACTIVE:
        raise Conflict(f"{model.key} is {model.state.value}; promote it before re-triage")
    return model.card


def retriage(session: Session, card: ModelCard) -> list[tuple[str, str]]:
    """Plan ``card`` on every series and slide of every open case it applies to."""
    open_cases = select(Case.id).where(Case.status.in_(OPEN_STATUSES))
    runs: list[TriageRun] = []
    for study in session.scalars(select(Study).where(Study.case_id.in_(open_cases))):
        runs += plan_study(session, [card], study)
    for slide in session.scalars(select(Slide).where(Slide.case_id.in_(open_cases))):
        runs += plan_slide(session, [card], slide)
    return mark_enqueued(runs)


def runs_for_case(session: Session, principal: Principal, case_id: str) -> Sequence[TriageRun]:
    case = cases.get_case(session, principal, case_id, audit_read=False)
    return session.scalars(
        select(TriageRun).where(TriageRun.case_id == case.id).order_by(TriageRun.created_at)
    ).all()
