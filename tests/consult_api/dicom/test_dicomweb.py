"""STOW-RS, QIDO-RS and WADO-RS through HTTP, with real DICOM files, bad input and access rules."""

from __future__ import annotations

import io
import sys
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.encaps import encapsulate
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.config import Settings
from consult_api.dicom.models import Instance, Series, Study
from tests.conftest import Actors, Network, new_case, resident_pages
from tests.consult_api.dicom.conftest import (
    CT_SMALL,
    JPEG2000,
    MR_SMALL,
    STOW_TYPE,
    related_body,
    stow,
)

STUDIES = "/dicom-web/studies"


def multipart_parts(response_body: bytes, content_type: str) -> list[bytes]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + response_body
    )
    return [part.get_payload(decode=True) for part in message.iter_parts()]  # type: ignore[attr-defined, misc]


def index_counts(factory: sessionmaker[Session]) -> tuple[int, int, int]:
    with factory() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(m)) or 0 for m in (Study, Series, Instance)
        )  # type: ignore[return-value]


def blob_files(settings: Settings) -> list[Path]:
    root = settings.blob_dir
    return [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp"]


def uid(element: dict[str, object]) -> str:
    return str(element["Value"][0])  # type: ignore[index]


def test_stow_then_qido_then_wado_byte_identical(client: TestClient, as_: Actors, network: Network) -> None:
    originals = {p.name: p.read_bytes() for p in (CT_SMALL, MR_SMALL, JPEG2000)}
    response = stow(client, as_["ref_d1"], list(originals.values()))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    assert len(response.json()["00081199"]["Value"]) == 3

    studies = client.get(STUDIES, headers=as_["ref_d1"]).json()
    assert len(studies) == 3
    ct = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    retrieved = client.get(f"{STUDIES}/{ct.StudyInstanceUID}", headers=as_["ref_d1"])
    assert retrieved.status_code == 200
    assert retrieved.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    assert multipart_parts(retrieved.content, retrieved.headers["content-type"]) == [
        originals["CT_small.dcm"]
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="page cache advice is Linux's")
def test_stow_gives_the_page_cache_back_once_its_parts_are_durable(
    client: TestClient, as_: Actors, settings: Settings
) -> None:
    """The next request writes into the pages this one used, not new ones (see ``sync_all``)."""
    probe = settings.blob_dir / "tmp" / "probe"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"x" * 65_536)
    if resident_pages(probe) == 0:
        pytest.skip("this filesystem does not keep written pages cached")
    probe.unlink()
    response = stow(client, as_["ref_d1"], [CT_SMALL.read_bytes(), MR_SMALL.read_bytes()])
    assert response.status_code == 200, response.text
    stored = blob_files(settings)
    assert len(stored) == 2
    assert [resident_pages(path) for path in stored] == [0, 0]


def test_stow_is_idempotent_and_refuses_changed_bytes(
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    original = CT_SMALL.read_bytes()
    assert stow(client, as_["ref_d1"], [original]).status_code == 200
    assert stow(client, as_["ref_d1"], [original]).status_code == 200
    assert index_counts(session_factory) == (1, 1, 1)

    changed = pydicom.dcmread(CT_SMALL)
    changed.PatientName = "Changed^Name"
    buffer = io.BytesIO()
    changed.save_as(buffer, enforce_file_format=True)
    refused = stow(client, as_["ref_d1"], [buffer.getvalue()])
    assert refused.status_code == 409
    failure = refused.json()["00081198"]["Value"][0]
    assert failure["00081197"]["Value"] == [0x0111]
    ds = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    url = f"{STUDIES}/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    kept = client.get(url, headers=as_["ref_d1"])
    assert multipart_parts(kept.content, kept.headers["content-type"]) == [original]
    assert len(blob_files(settings)) == 1


def _without(keyword: str) -> bytes:
    ds = pydicom.dcmread(CT_SMALL)
    delattr(ds, keyword)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _with_transfer_syntax(syntax: str) -> bytes:
    ds = pydicom.dcmread(CT_SMALL)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 96])  # an MPEG-2 sequence header start
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    return buffer.getvalue()


BAD_INSTANCES = {
    "truncated": (lambda: CT_SMALL.read_bytes()[:-500], 0xC000, "truncated"),
    "not dicom": (lambda: b"%PDF-1.4 definitely not DICOM" * 20, 0xC000, "not a DICOM"),
    "no SOP Instance UID": (lambda: _without("SOPInstanceUID"), 0xA900, "SOPInstanceUID is missing"),
    "no Study UID": (lambda: _without("StudyInstanceUID"), 0xA900, "StudyInstanceUID is missing"),
    "MPEG-2 video": (lambda: _with_transfer_syntax("1.2.840.10008.1.2.4.100"), 0xC122, "not supported"),
}


@pytest.mark.parametrize("case", sorted(BAD_INSTANCES))
def test_bad_instances_fail_alone_and_leave_nothing(
    case: str,
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    make, reason, message = BAD_INSTANCES[case]
    response = stow(client, as_["ref_d1"], [make(), MR_SMALL.read_bytes()])
    assert response.status_code == 202, response.text
    failed = response.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [reason]
    assert message in failed[0]["00741048"]["Value"][0]
    assert index_counts(session_factory) == (1, 1, 1)  # only MR_small
    assert len(blob_files(settings)) == 1
    assert list((settings.blob_dir / "tmp").iterdir()) == []


def test_request_level_errors(
    client: TestClient, as_: Actors, network: Network, session_factory: sessionmaker[Session]
) -> None:
    headers = as_["ref_d1"]
    wrong_type = client.post(
        STUDIES, content=CT_SMALL.read_bytes(), headers={**headers, "Content-Type": "application/json"}
    )
    assert wrong_type.status_code == 415
    assert wrong_type.headers["content-type"] == "application/problem+json"
    no_boundary = client.post(
        STUDIES,
        content=b"x",
        headers={**headers, "Content-Type": 'multipart/related; type="application/dicom"'},
    )
    assert no_boundary.status_code == 400
    cut = related_body([CT_SMALL.read_bytes()])[:-30]
    unterminated = client.post(STUDIES, content=cut, headers={**headers, "Content-Type": STOW_TYPE})
    assert unterminated.status_code == 400
    pdf = client.post(
        STUDIES,
        content=related_body([b"%PDF"], "application/pdf"),
        headers={**headers, "Content-Type": "multipart/related; boundary=hoichan-test-boundary"},
    )
    assert pdf.status_code == 409
    unauthenticated = stow(client, {}, [CT_SMALL.read_bytes()])
    assert unauthenticated.status_code == 401
    assert index_counts(session_factory) == (0, 0, 0)


def test_study_uid_in_url_must_match(client: TestClient, as_: Actors, network: Network) -> None:
    response = stow(client, as_["ref_d1"], [CT_SMALL.read_bytes()], url=f"{STUDIES}/1.2.3.4")
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]


def test_other_facilities_see_nothing(client: TestClient, as_: Actors, network: Network) -> None:
    stow(client, as_["ref_d1"], [CT_SMALL.read_bytes()])
    ds = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    for user in ("ref_d2", "rad_c1", "rad_c2", "ml_c1"):
        assert client.get(STUDIES, headers=as_[user]).json() == [], user
        assert client.get(f"{STUDIES}/{ds.StudyInstanceUID}", headers=as_[user]).status_code == 404, user
        assert (
            client.get(f"{STUDIES}/{ds.StudyInstanceUID}/metadata", headers=as_[user]).status_code == 404
        ), user
    assert len(client.get(STUDIES, headers=as_["fadm_d1"]).json()) == 1
    assert len(client.get(STUDIES, headers=as_["admin"]).json()) == 1


def test_attached_to_a_case_the_specialists_see_it(client: TestClient, as_: Actors, network: Network) -> None:
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    response = stow(client, as_["ref_d1"], [CT_SMALL.read_bytes()], url=f"{STUDIES}?case={case['id']}")
    assert response.status_code == 200, response.text
    assert client.get(STUDIES, headers=as_["rad_c1"]).json() == []  # still a draft
    client.post(f"/api/v1/cases/{case['id']}/status", json={"status": "submitted"}, headers=as_["ref_d1"])
    assert len(client.get(STUDIES, headers=as_["rad_c1"]).json()) == 1
    assert client.get(STUDIES, headers=as_["path_c1"]).json() == []  # imaging is not their specialty
    # Another facility cannot attach to that case.
    assert (
        stow(client, as_["ref_d2"], [MR_SMALL.read_bytes()], url=f"{STUDIES}?case={case['id']}").status_code
        == 404
    )


def test_qido_matching(client: TestClient, as_: Actors, network: Network, ct_files: list[Path]) -> None:
    headers = as_["ref_d1"]
    stow(client, headers, [CT_SMALL.read_bytes(), MR_SMALL.read_bytes(), *(p.read_bytes() for p in ct_files)])

    def studies(**params: str) -> list[dict[str, dict[str, object]]]:
        response = client.get(STUDIES, params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    assert len(studies()) == 3
    assert [uid(s["00100020"]) for s in studies(PatientName="TEST*")] == ["CT-0001"]
    assert len(studies(PatientName="test^series")) == 1
    assert len(studies(PatientName="ser", fuzzymatching="true")) == 1
    assert len(studies(ModalitiesInStudy="MR")) == 1
    assert len(studies(ModalitiesInStudy="CT,MR")) == 3
    assert len(studies(StudyDate="19000101-20001231")) == 0
    assert len(studies(limit="2")) == 2
    assert len(studies(limit="2", offset="2")) == 1
    series = client.get("/dicom-web/series", params={"Modality": "CT"}, headers=headers).json()
    assert len(series) == 2
    ct_series = [
        s
        for s in series
        if uid(s["00201209"]) == str(len(ct_files)) or s["00201209"]["Value"][0] == len(ct_files)
    ]
    assert len(ct_series) == 1
    instances = client.get(
        "/dicom-web/instances", params={"includefield": "00280030"}, headers=headers
    ).json()
    assert len(instances) == len(ct_files) + 2
    assert all("00280030" in i for i in instances)
    bad_date = client.get(STUDIES, params={"StudyDate": "2020-01-01"}, headers=headers)
    assert bad_date.status_code == 422
    ignored = client.get(STUDIES, params={"NotAnAttribute": "x"}, headers=headers)
    assert ignored.status_code == 200
    assert "NotAnAttribute" in ignored.headers["warning"]


def test_metadata_frames_and_rendered(client: TestClient, as_: Actors, network: Network) -> None:
    headers = as_["ref_d1"]
    stow(client, headers, [CT_SMALL.read_bytes(), JPEG2000.read_bytes()])
    ct = pydicom.dcmread(CT_SMALL)
    base = f"{STUDIES}/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}"

    metadata = client.get(f"{base}/metadata", headers=headers).json()[0]
    assert metadata["00100010"]["Value"][0]["Alphabetic"] == str(ct.PatientName)
    pixel_uri = metadata["7FE00010"]["BulkDataURI"]
    assert pixel_uri.endswith("/bulkdata/7FE00010")

    frames = client.get(f"{base}/frames/1", headers=headers)
    assert frames.status_code == 200
    assert multipart_parts(frames.content, frames.headers["content-type"]) == [ct.PixelData]
    assert client.get(f"{base}/frames/2", headers=headers).status_code == 404
    assert client.get(f"{base}/frames/x", headers=headers).status_code == 422

    rendered = client.get(f"{base}/rendered", params={"window": "40,400"}, headers=headers)
    assert rendered.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(rendered.content))
    assert image.size == (ct.Columns, ct.Rows)
    png = client.get(
        f"{base}/rendered", params={"viewport": "32,32"}, headers={**headers, "Accept": "image/png"}
    )
    assert Image.open(io.BytesIO(png.content)).size == (32, 32)
    assert client.get(f"{base}/rendered", params={"window": "40,-1"}, headers=headers).status_code == 422

    j2k = pydicom.dcmread(JPEG2000)
    j2k_base = (
        f"{STUDIES}/{j2k.StudyInstanceUID}/series/{j2k.SeriesInstanceUID}/instances/{j2k.SOPInstanceUID}"
    )
    compressed = client.get(f"{j2k_base}/frames/1", headers=headers)
    assert 'type="image/jp2"' in compressed.headers["content-type"]
    rendered_j2k = client.get(f"{j2k_base}/rendered", headers=headers)
    assert rendered_j2k.status_code == 200
    assert Image.open(io.BytesIO(rendered_j2k.content)).size == (j2k.Columns, j2k.Rows)

    not_acceptable = client.get(
        f"{STUDIES}/{ct.StudyInstanceUID}", headers={**headers, "Accept": "application/json"}
    )
    assert not_acceptable.status_code == 406
