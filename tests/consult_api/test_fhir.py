"""FHIR R4 export of a concluded case, validated with ``fhir.resources`` (a test-only dependency).

``fhir.resources`` 8 ships R5 (default), R4B and STU3 models; R4B is the technical correction of R4
and its DiagnosticReport, Observation, ImagingStudy, Device, Patient and Bundle are the R4 ones, so
the bundle is validated against ``fhir.resources.R4B``.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.audit.models import AuditEvent
from consult_api.findings.models import Finding, FindingState
from tests.conftest import Actors, Network, move, new_case
from tests.consult_api.dicom.conftest import stow

fhir_bundle = pytest.importorskip("fhir.resources.R4B.bundle")

API = "/api/v1"
# fhir.resources checks structure and cardinality but not codes against value sets: the required
# bindings the export uses are checked here, from the R4 specification.
R4_STATUS = {
    "DiagnosticReport": {
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "Observation": {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "ImagingStudy": {"registered", "available", "cancelled", "entered-in-error", "unknown"},
}


def _case_with_study(client: TestClient, as_: Actors, network: Network, ct_files: list[Path]) -> str:
    case_id = str(new_case(client, as_["ref_d1"], network.fid("C1"))["id"])
    move(client, as_["ref_d1"], case_id, "submitted")
    parts = [path.read_bytes() for path in ct_files]
    stored = stow(client, as_["ref_d1"], parts, url=f"/dicom-web/studies?case={case_id}")
    assert stored.status_code == 200, stored.text
    return case_id


def _seed_findings(factory: sessionmaker[Session], case_id: str, series_uid: str) -> None:
    with factory.begin() as session:
        session.add_all(
            [
                Finding(
                    id=str(uuid.uuid4()),
                    case_id=case_id,
                    model_name="ct-dense",
                    model_version="1.2.0",
                    input_checksum="a" * 64,
                    label="nodule",
                    score=0.91,
                    priority="urgent",
                    series_instance_uid=series_uid,
                    state=FindingState.accepted,
                    reviewer="rad_c1",
                ),
                Finding(
                    id=str(uuid.uuid4()),
                    case_id=case_id,
                    model_name="ct-dense",
                    model_version="1.2.0",
                    input_checksum="a" * 64,
                    label="effusion",
                    score=0.12,
                    priority="routine",
                ),
            ]
        )


def _conclude(client: TestClient, as_: Actors, case_id: str) -> None:
    move(client, as_["rad_c1"], case_id, "in_review")
    draft = client.post(
        f"{API}/cases/{case_id}/opinions",
        json={
            "findings": "Solid nodule RLL 9 mm",
            "impression": "Indeterminate nodule",
            "recommendations": "CT 3m",
        },
        headers=as_["rad_c1"],
    )
    assert draft.status_code == 201, draft.text
    signed = client.post(f"{API}/cases/{case_id}/opinions/{draft.json()['id']}/sign", headers=as_["rad_c1"])
    assert signed.status_code == 200, signed.text


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_concluded_case_exports_a_valid_r4_bundle(
    client: TestClient,
    as_: Actors,
    network: Network,
    ct_files: list[Path],
    session_factory: sessionmaker[Session],
) -> None:
    case_id = _case_with_study(client, as_, network, ct_files)
    first = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    _seed_findings(session_factory, case_id, str(first.SeriesInstanceUID))

    early = client.get(f"{API}/cases/{case_id}/fhir", headers=as_["rad_c1"])
    assert early.status_code == 409, early.text

    _conclude(client, as_, case_id)
    response = client.get(f"{API}/cases/{case_id}/fhir", headers=as_["ref_d1"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()

    fhir_bundle.Bundle.model_validate(bundle)  # every entry is validated by its resourceType
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] in R4_STATUS:
            assert resource["status"] in R4_STATUS[resource["resourceType"]]
    assert bundle["type"] == "collection"
    urls = {e["fullUrl"] for e in bundle["entry"]}

    (report,) = _resources(bundle, "DiagnosticReport")
    assert report["status"] == "final"
    assert report["conclusion"] == "Indeterminate nodule"
    text = base64.b64decode(report["presentedForm"][0]["data"]).decode()
    assert "Solid nodule RLL 9 mm" in text and "CT 3m" in text
    assert {r["reference"] for r in report["result"]} <= urls
    assert {r["reference"] for r in report["imagingStudy"]} <= urls

    observations = {o["code"]["text"]: o for o in _resources(bundle, "Observation")}
    assert set(observations) == {"nodule", "effusion"}
    nodule = observations["nodule"]
    assert nodule["valueQuantity"]["value"] == pytest.approx(0.91)
    assert nodule["status"] == "final" and observations["effusion"]["status"] == "preliminary"
    assert nodule["device"]["display"] == "ct-dense@1.2.0"
    assert any("ct-dense@1.2.0" in n["text"] for n in nodule["note"])
    (device,) = _resources(bundle, "Device")
    assert device["version"][0]["value"] == "1.2.0"

    (study,) = _resources(bundle, "ImagingStudy")
    assert study["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{first.StudyInstanceUID}"}
    (series,) = study["series"]
    assert series["uid"] == str(first.SeriesInstanceUID)
    assert series["modality"]["code"] == "CT"
    assert series["numberOfInstances"] == len(ct_files) == study["numberOfInstances"]

    with session_factory() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(
                AuditEvent.case_id == case_id, AuditEvent.action == "case.fhir_export"
            )
        ).all()
    assert len(actions) == 1  # the 409 was not an export


def test_invisible_case_is_404_and_closed_case_exports(
    client: TestClient, as_: Actors, network: Network, ct_files: list[Path]
) -> None:
    case_id = _case_with_study(client, as_, network, ct_files)
    _conclude(client, as_, case_id)
    assert client.get(f"{API}/cases/{case_id}/fhir", headers=as_["rad_c2"]).status_code == 404
    assert client.get(f"{API}/cases/{uuid.uuid4()}/fhir", headers=as_["rad_c1"]).status_code == 404
    move(client, as_["ref_d1"], case_id, "closed")
    response = client.get(f"{API}/cases/{case_id}/fhir", headers=as_["rad_c1"])
    assert response.status_code == 200, response.text
    fhir_bundle.Bundle.model_validate(response.json())
