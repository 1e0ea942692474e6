"""FHIR R4 export of a concluded case: a collection Bundle a hospital information system can import.

The document is built as plain dicts rather than with ``fhir.resources`` so that the serving install
carries no FHIR model library (the tests validate the output with it). It holds:

* the Patient (the referring facility's identifier; needed because ImagingStudy.subject is 1..1);
* one DiagnosticReport, status ``final``: the signed opinion (impression as ``conclusion``, the full
  text with addenda as ``presentedForm``), the findings as ``result``, the studies as ``imagingStudy``;
* one Observation per finding (code text = label, ``valueQuantity`` = score, the model name@version
  as ``device`` and in a note, the specialist's review mapped onto the Observation status);
* one Device per model version, so an importing system can tell AI results from human ones;
* one ImagingStudy per DICOM study of the case (study UID as ``urn:dicom:uid`` identifier, series
  with modality and instance counts; SR/SEG written by triage are series like any other).

Only a concluded or closed case is exported: before that there is no signed opinion to report, and
a provisional report leaking into a hospital record is worse than none.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.audit import service as audit
from consult_api.cases import service as cases
from consult_api.cases.models import Case, CaseKind, CaseStatus
from consult_api.dicom.models import Series, Study
from consult_api.errors import Conflict
from consult_api.facilities import repository as facilities
from consult_api.findings.models import Finding, FindingSource, FindingState
from consult_api.opinions.models import Opinion, OpinionStatus
from consult_api.users import repository as users

Resource = dict[str, Any]

EXPORTABLE_STATUSES = frozenset({CaseStatus.concluded, CaseStatus.closed})
DICOM_UID_SYSTEM = "urn:dicom:uid"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
LOINC = "http://loinc.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"
IDENTIFIER_SYSTEM = "urn:hoichan"
"""Base of our own identifier systems (``urn:hoichan:case``, ``urn:hoichan:patient:<facility>``)."""

REPORT_CODE = {
    CaseKind.pathology: ("60567-5", "Comprehensive pathology report panel", "PAT"),
}
DEFAULT_REPORT_CODE = ("18748-4", "Diagnostic imaging study", "RAD")
OBSERVATION_STATUS = {
    FindingState.proposed: "preliminary",
    FindingState.accepted: "final",
    FindingState.amended: "amended",
    FindingState.rejected: "cancelled",
}
"""A specialist's review is the authority: unreviewed AI output stays preliminary, a rejection cancels."""
SEX = {"M": "male", "F": "female", "O": "other", "U": "unknown"}
_NAMESPACE = uuid.UUID("6f1c3c55-3b55-4f4e-9d7c-4a0f5c2b8e11")


def _urn(kind: str, key: str) -> str:
    """A stable ``urn:uuid`` per (kind, our id): exporting twice gives the same references."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{kind}/{key}')}"


def _instant(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _reference(full_url: str, display: str | None = None) -> dict[str, str]:
    ref = {"reference": full_url}
    if display:
        ref["display"] = display
    return ref


def export_case(session: Session, principal: Principal, case_id: str) -> Resource:
    """The case as a FHIR R4 Bundle; 404 unless visible, 409 unless concluded or closed; audited."""
    case = cases.get_case(session, principal, case_id, audit_read=False)
    if case.status not in EXPORTABLE_STATUSES:
        raise Conflict(f"a {case.status} case has no final report to export; conclude it first")
    opinion = session.scalars(
        select(Opinion)
        .where(Opinion.case_id == case.id, Opinion.status == OpinionStatus.signed)
        .order_by(Opinion.signed_at.desc())
    ).first()
    if opinion is None:
        raise Conflict("the case has no signed opinion to export")
    findings = session.scalars(
        select(Finding).where(Finding.case_id == case.id).order_by(Finding.created_at, Finding.id)
    ).all()
    studies = session.scalars(
        select(Study).where(Study.case_id == case.id).order_by(Study.created_at, Study.id)
    ).all()
    bundle = build_bundle(session, case, opinion, findings, studies)
    audit.record(
        session,
        principal,
        "case.fhir_export",
        "case",
        case.id,
        case_id=case.id,
        detail={"observations": len(findings), "imaging_studies": len(studies)},
    )
    return bundle


def build_bundle(
    session: Session,
    case: Case,
    opinion: Opinion,
    findings: Sequence[Finding],
    studies: Sequence[Study],
) -> Resource:
    patient_url = _urn("patient", case.patient_id)
    entries: list[tuple[str, Resource]] = [(patient_url, _patient(case))]
    devices: dict[str, str] = {}
    observations: list[str] = []
    for finding in findings:
        device_url = None
        if finding.source is FindingSource.model and finding.model_name:
            key = f"{finding.model_name}@{finding.model_version}"
            if key not in devices:
                devices[key] = _urn("device", key)
                entries.append((devices[key], _device(finding)))
            device_url = devices[key]
        url = _urn("observation", finding.id)
        entries.append((url, _observation(finding, patient_url, device_url)))
        observations.append(url)
    study_urls = []
    for study in studies:
        url = _urn("imaging-study", study.id)
        entries.append((url, _imaging_study(session, study, patient_url)))
        study_urls.append(url)
    report_url = _urn("diagnostic-report", case.id)
    report = _diagnostic_report(session, case, opinion, patient_url, observations, study_urls)
    entries.insert(1, (report_url, report))
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(_NAMESPACE, f"bundle/{case.id}/{opinion.id}")),
        "type": "collection",
        "timestamp": _instant(opinion.signed_at or case.concluded_at),
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in entries],
    }


def _patient(case: Case) -> Resource:
    patient = case.patient
    resource: Resource = {
        "resourceType": "Patient",
        "identifier": [
            {
                "system": f"{IDENTIFIER_SYSTEM}:patient:{patient.issuer_facility_id}",
                "value": patient.identifier,
            }
        ],
        "name": [{"text": patient.name}],
        "gender": SEX.get(patient.sex.value, "unknown"),
    }
    if patient.birth_date is not None:
        resource["birthDate"] = patient.birth_date.isoformat()
    return resource


def _device(finding: Finding) -> Resource:
    return {
        "resourceType": "Device",
        "deviceName": [{"name": finding.model_name or "", "type": "model-name"}],
        "version": [{"value": finding.model_version or ""}],
        "note": [{"text": f"AI triage model {finding.model_name}@{finding.model_version}"}],
    }


def _observation(finding: Finding, patient_url: str, device_url: str | None) -> Resource:
    notes = []
    if finding.source is FindingSource.model:
        notes.append(f"AI triage model {finding.model_name}@{finding.model_version}")
    else:
        notes.append("Specialist finding")
    if finding.state is not FindingState.proposed:
        review = f"Specialist review: {finding.state.value}"
        if finding.reviewer:
            review += f" by {finding.reviewer}"
        if finding.amended_label:
            review += f"; corrected label: {finding.amended_label}"
        if finding.review_comment:
            review += f"; {finding.review_comment}"
        notes.append(review)
    resource: Resource = {
        "resourceType": "Observation",
        "identifier": [{"system": f"{IDENTIFIER_SYSTEM}:finding", "value": finding.id}],
        "status": OBSERVATION_STATUS[finding.state],
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        "code": {"text": finding.label},
        "subject": _reference(patient_url),
        "issued": _instant(finding.created_at),
        "note": [{"text": text} for text in notes],
    }
    if finding.score is not None:
        resource["valueQuantity"] = {
            "value": round(float(finding.score), 6),
            "unit": "score",
            "system": UCUM,
            "code": "1",
        }
    if finding.priority:
        resource["interpretation"] = [{"text": f"triage priority: {finding.priority}"}]
    if device_url is not None:
        resource["device"] = _reference(device_url, f"{finding.model_name}@{finding.model_version}")
    if finding.study_instance_uid or finding.series_instance_uid:
        # The image the finding is on, so a receiver can match it to the ImagingStudy's series.
        uid = finding.series_instance_uid or finding.study_instance_uid
        resource["identifier"].append({"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"})
    return {k: v for k, v in resource.items() if v is not None}


def _opinion_text(session: Session, opinion: Opinion) -> str:
    parts = [
        f"Findings:\n{opinion.findings}",
        f"Impression:\n{opinion.impression}",
    ]
    if opinion.recommendations:
        parts.append(f"Recommendations:\n{opinion.recommendations}")
    for addendum in opinion.addenda:
        author = users.get(session, addendum.author_id)
        by = author.full_name if author else addendum.author_id
        parts.append(f"Addendum ({addendum.created_at.isoformat()}, {by}):\n{addendum.text}")
    return "\n\n".join(parts)


def _diagnostic_report(
    session: Session,
    case: Case,
    opinion: Opinion,
    patient_url: str,
    observations: list[str],
    studies: list[str],
) -> Resource:
    code, display, category = REPORT_CODE.get(case.kind, DEFAULT_REPORT_CODE)
    author = users.get(session, opinion.author_id)
    target = facilities.get(session, case.target_facility_id)
    text = _opinion_text(session, opinion)
    resource: Resource = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": f"{IDENTIFIER_SYSTEM}:case", "value": case.id}],
        "status": "final" if not opinion.addenda else "appended",
        "category": [{"coding": [{"system": V2_0074, "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "subject": _reference(patient_url),
        "effectiveDateTime": _instant(case.submitted_at or case.created_at),
        "issued": _instant(opinion.signed_at),
        "performer": [{"display": target.name if target else case.target_facility_id}],
        "resultsInterpreter": [{"display": author.full_name if author else opinion.author_id}],
        "result": [_reference(url) for url in observations],
        "imagingStudy": [_reference(url) for url in studies],
        "conclusion": opinion.impression,
        "presentedForm": [
            {
                "contentType": "text/plain; charset=utf-8",
                "language": "en",
                "data": base64.b64encode(text.encode()).decode("ascii"),
                "title": "Specialist opinion",
                "creation": _instant(opinion.signed_at),
            }
        ],
    }
    return {k: v for k, v in resource.items() if v not in (None, [])}


def _imaging_study(session: Session, study: Study, patient_url: str) -> Resource:
    series = session.scalars(
        select(Series).where(Series.study_id == study.id).order_by(Series.series_number, Series.id)
    ).all()
    resource: Resource = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study.study_instance_uid}"}],
        "status": "available",
        "modality": [{"system": DICOM_DCM, "code": m} for m in sorted(set(study.modalities or []))],
        "subject": _reference(patient_url),
        "numberOfSeries": len(series),
        "numberOfInstances": sum(s.number_of_instances for s in series),
        "series": [_series(s) for s in series],
    }
    if study.accession_number:
        resource["identifier"].append(
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]
                },
                "value": study.accession_number,
            }
        )
    if study.study_description:
        resource["description"] = study.study_description
    started = _study_started(study.study_date)
    if started:
        resource["started"] = started
    return {k: v for k, v in resource.items() if v not in (None, [])}


def _series(series: Series) -> Resource:
    resource: Resource = {
        "uid": series.series_instance_uid,
        "modality": {"system": DICOM_DCM, "code": series.modality or "OT"},
        "numberOfInstances": series.number_of_instances,
    }
    if series.series_number is not None:
        resource["number"] = series.series_number
    if series.series_description:
        resource["description"] = series.series_description
    if series.body_part_examined:
        resource["bodySite"] = {"display": series.body_part_examined}
    return resource


def _study_started(date: str) -> str | None:
    """DICOM DA as a FHIR dateTime; the time is left out because DICOM TM has no zone and FHIR needs one."""
    if len(date) != 8 or not date.isdigit():
        return None
    return f"{date[:4]}-{date[4:6]}-{date[6:]}"
