"""Training export: confirmed findings only, de-identified DICOM, label-free slides, pseudonyms."""

from __future__ import annotations

import json
import re
import zipfile
from io import BytesIO
from pathlib import Path

import openslide
import pydicom
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from consult_api.db import utcnow
from consult_api.findings.models import Finding, FindingSource, FindingState
from datasets.manifest import read_manifest
from tests.conftest import PATIENT, Actors, Network, new_case
from tests.consult_api.dicom.conftest import stow
from tests.consult_api.slides.conftest import upload_slide


def _finding(case_id: str, state: FindingState, **fields: object) -> Finding:
    return Finding(
        case_id=case_id,
        source=FindingSource.model,
        model_name="demo-ct-lesion",
        model_version="1.0.0",
        input_checksum="0" * 64,
        state=state,
        reviewer="user:reviewer-1",
        reviewed_at=utcnow(),
        **fields,
    )


def test_export_has_only_confirmed_findings_and_no_phi(
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    ct_files: list[Path],
    svs_path: Path,
    tmp_path: Path,
) -> None:
    imaging = new_case(client, as_["ref_d1"], network.fid("C1"))
    assert (
        stow(
            client,
            as_["ref_d1"],
            [p.read_bytes() for p in ct_files],
            url=f"/dicom-web/studies?case={imaging['id']}",
        ).status_code
        == 200
    )
    pathology = new_case(client, as_["ref_d1"], network.fid("C1"), kind="pathology")
    slide = upload_slide(client, as_["ref_d1"], svs_path, str(pathology["id"]))
    source = pydicom.dcmread(ct_files[0])
    with session_factory.begin() as session:
        session.add_all(
            [
                _finding(
                    str(imaging["id"]),
                    FindingState.accepted,
                    label="lesion",
                    score=0.9,
                    study_instance_uid=source.StudyInstanceUID,
                    series_instance_uid=source.SeriesInstanceUID,
                ),
                _finding(
                    str(imaging["id"]),
                    FindingState.rejected,
                    label="nodule",
                    score=0.6,
                    series_instance_uid=source.SeriesInstanceUID,
                ),
                _finding(
                    str(pathology["id"]),
                    FindingState.amended,
                    label="normal",
                    amended_label="tumour",
                    score=0.4,
                    slide_id=str(slide["id"]),
                    location={"bbox": {"x": 100, "y": 200, "width": 256, "height": 256}},
                ),
                _finding(
                    str(pathology["id"]),
                    FindingState.proposed,
                    label="tumour",
                    score=0.8,
                    slide_id=str(slide["id"]),
                ),
            ]
        )

    assert client.post("/api/v1/exports/training", json={}, headers=as_["rad_c1"]).status_code == 403
    created = client.post("/api/v1/exports/training", json={}, headers=as_["ml_c1"])
    assert created.status_code == 201, created.text
    export = created.json()
    assert (export["items"], export["series"], export["slides"], export["instances"]) == (
        2,
        1,
        1,
        len(ct_files),
    )

    manifest_response = client.get(f"/api/v1/exports/training/{export['id']}/manifest", headers=as_["ml_c1"])
    manifest = manifest_response.json()
    assert sorted(i["kind"] for i in manifest["items"]) == ["dicom_series", "slide"]
    slide_item = next(i for i in manifest["items"] if i["kind"] == "slide")
    assert slide_item["labels"] == ["tumour"]
    assert slide_item["provenance"]["decision"] == "amended"
    assert slide_item["provenance"]["original_label"] == "normal"
    assert slide_item["provenance"]["proposed_by"] == {"name": "demo-ct-lesion", "version": "1.0.0"}
    text = json.dumps(manifest)
    for leaked in (str(imaging["id"]), str(pathology["id"]), "reviewer-1", PATIENT["name"], "TEST^SERIES"):
        # As a whole token: a pseudonym such as "reviewer-19990aa9..." may start with a username.
        assert not re.search(rf"(?<![\w-]){re.escape(leaked)}(?![\w-])", text), leaked

    archive = client.get(f"/api/v1/exports/training/{export['id']}/archive", headers=as_["ml_c1"])
    folder = tmp_path / "unzipped"
    zipfile.ZipFile(BytesIO(archive.content)).extractall(folder)
    read_manifest(folder)  # every file present, no path escapes
    dicom_item = next(i for i in manifest["items"] if i["kind"] == "dicom_series")
    for name in dicom_item["files"]:
        ds = pydicom.dcmread(folder / name)
        assert ds.PatientIdentityRemoved == "YES"
        assert "TEST" not in str(ds.PatientName)
        assert ds.StudyInstanceUID != source.StudyInstanceUID
    exported_slide = openslide.OpenSlide(str(folder / slide_item["files"][0]))
    assert list(exported_slide.associated_images) == []
    assert openslide.OpenSlide(str(svs_path)).associated_images  # the original has label and macro
    assert (
        client.get(f"/api/v1/exports/training/{export['id']}/manifest", headers=as_["ref_d1"]).status_code
        == 403
    )
    assert client.get("/api/v1/exports/training/../../etc/manifest", headers=as_["ml_c1"]).status_code == 404
