"""dicomweb-client, a third-party DICOMweb client, against a real uvicorn server."""

from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
import uvicorn
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.app import create_app
from consult_api.config import Settings
from consult_api.dicom.models import Instance, Study
from consult_api.dicom.stability import complete_quiet_studies
from tests.conftest import PASSWORD, Actors, Network, free_port, new_case
from tests.consult_api.dicom.conftest import CT_SMALL, MR_SMALL

pytestmark = pytest.mark.integration


@pytest.fixture
def live_server(settings: Settings, network: Network) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _token(base: str, username: str) -> str:
    response = httpx.post(f"{base}/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["access_token"])


def test_store_search_retrieve_with_dicomweb_client(live_server: str, ct_files: list[Path]) -> None:
    client = DICOMwebClient(
        url=f"{live_server}/dicom-web", headers={"Authorization": f"Bearer {_token(live_server, 'ref_d1')}"}
    )
    datasets = [pydicom.dcmread(p) for p in ct_files]
    client.store_instances(datasets)

    studies = client.search_for_studies(search_filters={"PatientID": "CT-0001"})
    assert len(studies) == 1
    study_uid = studies[0]["0020000D"]["Value"][0]
    series = client.search_for_series(study_uid)
    assert len(series) == 1
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = client.search_for_instances(study_uid, series_uid)
    assert len(instances) == len(ct_files)

    sent = {p.read_bytes() for p in ct_files}
    first = datasets[0]
    retrieved = client.retrieve_instance(study_uid, series_uid, first.SOPInstanceUID)
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, retrieved, enforce_file_format=True)
    assert retrieved.PixelData == first.PixelData
    raw = httpx.get(
        f"{live_server}/dicom-web/studies/{study_uid}",
        headers={"Authorization": client._session.headers["Authorization"]},  # type: ignore[attr-defined]
    )
    boundary = raw.headers["content-type"].split("boundary=")[1]
    parts = [
        p.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        for p in raw.content.split(f"--{boundary}".encode())[1:-1]
    ]
    assert set(parts) == sent  # byte-identical, as sent

    metadata = client.retrieve_series_metadata(study_uid, series_uid)
    assert len(metadata) == len(ct_files)
    frames = client.retrieve_instance_frames(study_uid, series_uid, first.SOPInstanceUID, frame_numbers=[1])
    assert frames[0] == first.PixelData


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _instances(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(Instance)) or 0


def test_browser_upload_of_files_and_a_zip(
    client: TestClient,
    as_: Actors,
    network: Network,
    ct_files: list[Path],
    session_factory: sessionmaker[Session],
) -> None:
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    archive = _zip(
        {f"series/{p.name}": p.read_bytes() for p in ct_files} | {"DICOMDIR": b"skipped", "notes.txt": b"x"}
    )
    response = client.post(
        f"/api/v1/cases/{case['id']}/dicom",
        files=[
            ("files", ("study.zip", archive, "application/zip")),
            ("files", ("ct.dcm", CT_SMALL.read_bytes(), "application/dicom")),
        ],
        headers=as_["ref_d1"],
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["stored"] == len(ct_files) + 1
    assert report["failed"] == 1  # notes.txt
    assert [i["filename"] for i in report["instances"] if i["failure_reason"]] == ["study.zip/notes.txt"]
    with session_factory() as session:
        assert set(session.scalars(select(Study.case_id))) == {case["id"]}


UNSAFE = {
    "traversal": ({"../../etc/evil.dcm": b"x"}, "outside the archive"),
    "absolute": ({"/abs/evil.dcm": b"x"}, "outside the archive"),
    "nested": ({"inner.zip": _zip({"a.dcm": b"x"})}, "nested archives"),
    "bomb": ({"bomb.dcm": b"\0" * 5_000_000}, "zip bomb"),
}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_unsafe_zip_is_refused_whole(
    kind: str,
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    entries, message = UNSAFE[kind]
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    archive = _zip({"good.dcm": MR_SMALL.read_bytes(), **entries})
    response = client.post(
        f"/api/v1/cases/{case['id']}/dicom",
        files=[("files", ("study.zip", archive, "application/zip"))],
        headers=as_["ref_d1"],
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert _instances(session_factory) == 0
    assert [p for p in settings.blob_dir.rglob("*") if p.is_file()] == []


def test_upload_to_someone_elses_case_is_not_found(client: TestClient, as_: Actors, network: Network) -> None:
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    response = client.post(
        f"/api/v1/cases/{case['id']}/dicom",
        files=[("files", ("ct.dcm", CT_SMALL.read_bytes()))],
        headers=as_["ref_d2"],
    )
    assert response.status_code == 404


def test_study_completes_after_a_quiet_period(
    client: TestClient,
    as_: Actors,
    network: Network,
    ct_files: list[Path],
    session_factory: sessionmaker[Session],
) -> None:
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    files = [("files", (p.name, p.read_bytes())) for p in ct_files]
    client.post(f"/api/v1/cases/{case['id']}/dicom", files=files, headers=as_["ref_d1"])
    with session_factory.begin() as session:
        assert complete_quiet_studies(session, quiet_seconds=3600) == []
    time.sleep(0.05)
    with session_factory.begin() as session:
        done = complete_quiet_studies(session, quiet_seconds=0.01)
        assert [s.number_of_instances for s in done] == [len(ct_files)]
    with session_factory.begin() as session:
        assert complete_quiet_studies(session, quiet_seconds=0.01) == []  # exactly once
    timeline = client.get(f"/api/v1/cases/{case['id']}/timeline", headers=as_["ref_d1"]).json()
    assert any(e["type"] == "study_complete" for e in timeline)


def test_dicom_nodes_are_managed_by_facility_admins(
    client: TestClient, as_: Actors, network: Network
) -> None:
    url = f"/api/v1/facilities/{network.fid('D1')}/dicom-nodes"
    body = {"ae_title": "CT_SCANNER_1", "may_store": True}
    assert client.post(url, json=body, headers=as_["ref_d1"]).status_code == 403
    created = client.post(url, json=body, headers=as_["fadm_d1"])
    assert created.status_code == 201, created.text
    assert client.post(url, json=body, headers=as_["fadm_d1"]).status_code == 409
    assert client.post(url, json={"ae_title": "X" * 17}, headers=as_["fadm_d1"]).status_code == 422
    assert [n["ae_title"] for n in client.get(url, headers=as_["fadm_d1"]).json()] == ["CT_SCANNER_1"]
    assert client.get(url, headers=as_["fadm_d2"]).status_code == 403
    deleted = client.delete(f"{url}/{created.json()['id']}", headers=as_["fadm_d1"])
    assert deleted.status_code == 204
