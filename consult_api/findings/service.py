"""Rules for findings: who sees and reviews them, how model results are stored, and agreement.

Model findings are stored idempotently (see ``models``); a review by a specialist of the target
facility accepts, rejects or amends one, and the counts per model version become the AI-vs-specialist
agreement the model registry page shows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from consult_api.access import Principal, Role
from consult_api.audit import service as audit
from consult_api.cases import service as cases
from consult_api.cases.models import Case, CaseStatus, Priority
from consult_api.db import utcnow
from consult_api.errors import Conflict, InvalidInput, NotPermitted, ResourceNotFound
from consult_api.findings import heatmap, repository
from consult_api.findings.models import Finding, FindingState
from consult_api.findings.schemas import LabelAgreement, ModelAgreement, RegionIn
from consult_api.slides.models import Slide
from consult_api.storage.blobs import BlobStore

PRIORITY_ORDER = (Priority.routine, Priority.urgent, Priority.critical)
REVIEWABLE_STATUSES = frozenset(
    {CaseStatus.submitted, CaseStatus.triaged, CaseStatus.in_review, CaseStatus.needs_info}
)


def list_findings(session: Session, principal: Principal, case_id: str) -> Sequence[Finding]:
    case = cases.get_case(session, principal, case_id, audit_read=False)
    audit.record(session, principal, "finding.list", "case", case.id, case_id=case.id)
    return repository.for_case(session, case.id)


def heatmap_finding(session: Session, principal: Principal, case_id: str, finding_id: str) -> Finding:
    """A finding of a case the caller sees, that has a heatmap (404 otherwise); the read is audited."""
    case = cases.get_case(session, principal, case_id, audit_read=False)
    finding = repository.in_case(session, case.id, finding_id)
    if finding is None or not finding.heatmap_sha256:
        raise ResourceNotFound("finding heatmap", finding_id)
    audit.record(session, principal, "finding.heatmap", "finding", finding.id, case_id=case.id)
    return finding


def render_heatmap(
    session: Session, store: BlobStore, finding: Finding, *, slice_index: int | None, max_side: int
) -> bytes:
    """The finding's heatmap as an RGBA PNG: over the whole slide (``max_side`` on the longer side) for
    a slide finding, else one slice of the series at the slice's size (the finding's slice by default).
    """
    array = heatmap.load(store.open_verified(str(finding.heatmap_sha256)))
    location = finding.location or {}
    try:
        if finding.slide_id is not None or "tile_size_level0" in location:
            slide = session.get(Slide, finding.slide_id) if finding.slide_id else None
            geometry = heatmap.slide_geometry(location, (slide.width, slide.height) if slide else None)
            if geometry is None:
                raise Conflict("the slide's dimensions are unknown; the heatmap cannot be placed")
            return heatmap.slide_png(array, geometry, max_side)
        if slice_index is None and isinstance(location.get("slice_index"), int):
            slice_index = int(location["slice_index"])
        return heatmap.series_png(array, slice_index)
    except heatmap.SliceOutOfRange as exc:
        raise InvalidInput(str(exc)) from exc
    except heatmap.HeatmapUnavailable as exc:
        raise Conflict(str(exc)) from exc


def _reviewable(
    session: Session, principal: Principal, case_id: str, finding_id: str
) -> tuple[Case, Finding]:
    case = cases.get_case(session, principal, case_id, audit_read=False)
    if not principal.is_specialist_for(case):
        raise NotPermitted("only a specialist of the target facility reviews findings")
    if case.status not in REVIEWABLE_STATUSES:
        raise Conflict(f"findings of a {case.status} case can no longer be reviewed")
    finding = repository.in_case(session, case.id, finding_id)
    if finding is None:
        raise ResourceNotFound("finding", finding_id)
    return case, finding


def review(
    session: Session,
    principal: Principal,
    case_id: str,
    finding_id: str,
    state: FindingState,
    *,
    comment: str = "",
    label: str | None = None,
    region: RegionIn | None = None,
) -> Finding:
    """Accept, reject or amend; a later review replaces an earlier one (the audit trail keeps both)."""
    case, finding = _reviewable(session, principal, case_id, finding_id)
    if state is FindingState.amended and label is None and region is None:
        raise Conflict("an amendment needs a corrected label or region")
    previous = finding.state
    finding.state = state
    finding.reviewer = principal.actor
    finding.reviewed_at = utcnow()
    finding.review_comment = comment
    finding.amended_label = label if state is FindingState.amended else None
    finding.amended_location = (
        region.model_dump(mode="json", exclude_none=True)
        if state is FindingState.amended and region
        else None
    )
    session.flush()
    audit.record(
        session,
        principal,
        f"finding.{state.value}",
        "finding",
        finding.id,
        case_id=case.id,
        detail={"from": previous.value, "model": f"{finding.model_name}@{finding.model_version}"},
    )
    return finding


def agreement(session: Session, principal: Principal) -> list[ModelAgreement]:
    """AI-vs-specialist agreement per model version (and per label): accepted / reviewed."""
    if not principal.has_any(Role.ml_engineer, Role.admin):
        raise NotPermitted("agreement statistics are for ML engineers and administrators")
    counts: dict[tuple[str, str], dict[str, dict[FindingState, int]]] = defaultdict(
        lambda: defaultdict(lambda: dict.fromkeys(FindingState, 0))
    )
    for row in repository.agreement_counts(session):
        counts[(row.model_name, row.model_version)][row.label][row.state] += row.count
    audit.record(session, principal, "finding.agreement", "model", None)
    return [_model_agreement(name, version, labels) for (name, version), labels in sorted(counts.items())]


def _rate(accepted: int, reviewed: int) -> float | None:
    return accepted / reviewed if reviewed else None


def _label_agreement(label: str, c: dict[FindingState, int]) -> LabelAgreement:
    reviewed = c[FindingState.accepted] + c[FindingState.rejected] + c[FindingState.amended]
    return LabelAgreement(
        label=label,
        proposed=c[FindingState.proposed],
        accepted=c[FindingState.accepted],
        rejected=c[FindingState.rejected],
        amended=c[FindingState.amended],
        reviewed=reviewed,
        agreement=_rate(c[FindingState.accepted], reviewed),
    )


def _model_agreement(name: str, version: str, labels: dict[str, dict[FindingState, int]]) -> ModelAgreement:
    per_label = [_label_agreement(label, c) for label, c in sorted(labels.items())]
    accepted = sum(a.accepted for a in per_label)
    reviewed = sum(a.reviewed for a in per_label)
    return ModelAgreement(
        model_name=name,
        model_version=version,
        findings=sum(a.proposed + a.reviewed for a in per_label),
        reviewed=reviewed,
        accepted=accepted,
        rejected=sum(a.rejected for a in per_label),
        amended=sum(a.amended for a in per_label),
        agreement=_rate(accepted, reviewed),
        labels=per_label,
    )


# -- written by the triage service (system, no principal) --------------------------------------------


def store_model_findings(session: Session, findings: Sequence[Finding]) -> list[Finding]:
    """Insert model findings that are not stored yet; returns the ones this call inserted."""
    return [f for f in findings if repository.add_once(session, f)]


def combined_priority(case: Case, ai_priorities: Sequence[str]) -> Priority:
    """The case's priority after triage: the highest of the AI's, the referrer's flag and the current.

    Automatic triage only ever raises a priority; lowering one is a specialist's decision.
    """
    candidates = [case.priority, Priority.urgent if case.urgent else Priority.routine]
    candidates += [Priority(p) for p in ai_priorities]
    return max(candidates, key=PRIORITY_ORDER.index)


def location_json(**fields: Any) -> dict[str, Any]:
    """Location without empty fields, so clients test presence rather than null."""
    return {k: v for k, v in fields.items() if v is not None}
