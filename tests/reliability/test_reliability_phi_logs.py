"""No patient data in logs over a full run: ``hoichan serve`` at DEBUG, a whole referral with named
test patients (case, STOW-RS, QIDO by name, slide upload with patient tags, triage, opinion), then
the captured stdout/stderr is searched for every name and identifier."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from datasets.synthetic.ct import write_ct_series
from tests.consult_api.slides.synthetic import write_dicom_wsi
from tests.reliability.live import LiveServer, build_network

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Distinctive strings that occur nowhere else: any hit in the log is a leak.
CASE_PATIENT = {"identifier": "HN-QX7731Z", "name": "Quorrax Vellimund"}
DICOM_NAME, DICOM_ID = "ZYXWARD^PELLINORE", "PID-KV9Q2W"
SLIDE_NAME, SLIDE_ID = "OSTRAVANE^MIRELDA", "SL-JJ4H8T"
SECRETS = [
    CASE_PATIENT["identifier"],
    CASE_PATIENT["name"],
    "Quorrax",
    "Vellimund",
    DICOM_NAME,
    "ZYXWARD",
    "PELLINORE",
    DICOM_ID,
    SLIDE_NAME,
    "OSTRAVANE",
    "MIRELDA",
    SLIDE_ID,
]
BOUNDARY = "reliability-boundary"


def _stow_body(parts: list[bytes]) -> bytes:
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n" for part in parts
    )
    return body + f"--{BOUNDARY}--\r\n".encode()


def _ct_instances(folder: Path) -> list[bytes]:
    slices = np.random.default_rng(3).normal(40, 20, size=(4, 64, 64)).astype(np.int16)
    write_ct_series(slices, folder, spacing_mm=(2.5, 0.7, 0.7), patient_name=DICOM_NAME, patient_id=DICOM_ID)
    return [p.read_bytes() for p in sorted(folder.rglob("*.dcm"))]


def _slide_zip(folder: Path) -> bytes:
    write_dicom_wsi(folder, width=512, height=512, levels=1)
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID = SLIDE_NAME, SLIDE_ID
        ds.save_as(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.glob("*.dcm")):
            archive.write(path, path.name)
    return buffer.getvalue()


def _tus_upload(http, headers: dict[str, str], data: bytes, case_id: str, filename: str):  # type: ignore[no-untyped-def]
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"filename": filename, "case_id": case_id}.items()
    )
    tus = {"Tus-Resumable": "1.0.0"}
    created = http.post(
        "/uploads", headers={**headers, **tus, "Upload-Length": str(len(data)), "Upload-Metadata": meta}
    )
    assert created.status_code == 201, created.text
    checksum = "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()
    return http.patch(
        created.headers["Location"],
        content=data,
        headers={
            **headers,
            **tus,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": checksum,
        },
    )


def test_full_run_logs_no_patient_data(tmp_path: Path) -> None:
    server = LiveServer(
        tmp_path,
        {
            "HOICHAN_LOG_LEVEL": "DEBUG",
            "HOICHAN_STUDY_STABLE_SECONDS": "1",
            "HOICHAN_TRIAGE_POLL_SECONDS": "1",
        },
    ).start()
    try:
        with server.client() as http:
            net = build_network(http)
            ref, rad, path = net["ref"], net["rad"], net["path"]
            central_id = net["central"]["id"]  # type: ignore[index]
            case = http.post(
                "/api/v1/cases",
                json={
                    "kind": "imaging",
                    "target_facility_id": central_id,
                    "clinical_question": "Head CT after fall",
                    "patient": {**CASE_PATIENT, "birth_date": "1950-01-02", "sex": "F"},
                },
                headers=ref,
            ).json()
            case_id = case["id"]
            assert http.post(
                f"/api/v1/cases/{case_id}/status", json={"status": "submitted"}, headers=ref
            ).is_success
            # Searches by the patient's name and identifier (query strings must not reach the logs).
            assert http.get("/api/v1/cases", params={"q": CASE_PATIENT["name"]}, headers=ref).is_success
            assert http.get("/api/v1/cases", params={"q": CASE_PATIENT["identifier"]}, headers=ref).is_success

            stow = http.post(
                f"/dicom-web/studies?case={case_id}",
                content=_stow_body(_ct_instances(tmp_path / "ct")),
                headers={
                    **ref,
                    "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                },
            )
            assert stow.status_code == 200, stow.text
            # A refused instance (duplicate UID with other content) also goes through the log path.
            for query in ({"PatientName": DICOM_NAME}, {"PatientName": "ZYXW*"}, {"PatientID": DICOM_ID}):
                found = http.get("/dicom-web/studies", params=query, headers=rad)
                assert found.status_code == 200, found.text
                assert len(found.json()) == 1
            study_uid = found.json()[0]["0020000D"]["Value"][0]
            assert http.get(f"/dicom-web/studies/{study_uid}/metadata", headers=rad).status_code == 200

            pathology = http.post(
                "/api/v1/cases",
                json={
                    "kind": "pathology",
                    "target_facility_id": central_id,
                    "clinical_question": "Biopsy",
                    "patient": CASE_PATIENT,
                },
                headers=ref,
            ).json()
            http.post(f"/api/v1/cases/{pathology['id']}/status", json={"status": "submitted"}, headers=ref)
            uploaded = _tus_upload(
                http, ref, _slide_zip(tmp_path / "wsi"), pathology["id"], f"{SLIDE_ID}.zip"
            )
            assert uploaded.status_code == 204, uploaded.text
            slide_url = "/api" + uploaded.headers["Slide-Location"][4:]
            assert http.get(slide_url, headers=path).status_code == 200
            assert http.get(f"{slide_url}/label", headers=path).status_code in (200, 404)

            time.sleep(3)  # let the worker see the study as complete and triage it
            moved = http.post(f"/api/v1/cases/{case_id}/status", json={"status": "in_review"}, headers=rad)
            assert moved.status_code == 200, moved.text
            opinion = http.post(
                f"/api/v1/cases/{case_id}/opinions",
                json={
                    "impression": f"No bleed in {CASE_PATIENT['name']}"
                },  # a careless author names the patient
                headers=rad,
            ).json()
            signed = http.post(f"/api/v1/cases/{case_id}/opinions/{opinion['id']}/sign", headers=rad)
            assert signed.status_code == 200, signed.text
            # Failed logins with a patient's name as username must not be logged either.
            http.post("/api/v1/auth/token", data={"username": CASE_PATIENT["name"], "password": "x"})
    finally:
        server.stop()
    log = server.log()
    assert '"level": "DEBUG"' in log or "DEBUG" in log, "the run did not log at DEBUG"
    assert len(log.splitlines()) > 50
    leaks = {
        s: [line[:300] for line in log.splitlines() if re.search(re.escape(s), line, re.I)][:3]
        for s in SECRETS
    }
    leaks = {s: lines for s, lines in leaks.items() if lines}
    assert not leaks, f"patient data in the logs: {leaks}"
