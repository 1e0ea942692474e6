"""DIMSE with real peers: dcmtk's echoscu/storescu/findscu/getscu and pynetdicom as a second SCU."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.dicom.dimse import DimseListener
from consult_api.dicom.models import DicomNode, Instance, Study
from tests.conftest import dcmtk_tool
from tests.consult_api.dicom.conftest import CT_SMALL, JPEG2000, MR_SMALL

pytestmark = pytest.mark.skipif(dcmtk_tool("storescu") is None, reason="dcmtk is not installed")


def dcmtk(tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "0"}  # stock behaviour: Nagle on, as hospitals run it
    binary = dcmtk_tool(tool)
    assert binary is not None, f"dcmtk's {tool} is missing"
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def count(session_factory: sessionmaker[Session], model: type) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_echo_from_registered_and_unknown_ae(listener: DimseListener) -> None:
    ok = dcmtk("echoscu", "-aet", "MODALITY_D1", "-aec", "HOICHAN", "127.0.0.1", str(listener.port))
    assert ok.returncode == 0, ok.stderr
    refused = dcmtk("echoscu", "-aet", "STRANGER", "-aec", "HOICHAN", "127.0.0.1", str(listener.port))
    assert refused.returncode != 0
    assert "Rejected" in refused.stderr or "rejected" in refused.stderr.lower()


def test_storescu_sends_real_files_and_a_series(
    listener: DimseListener, ct_files: list[Path], session_factory: sessionmaker[Session], settings
) -> None:  # type: ignore[no-untyped-def]
    files = [str(CT_SMALL), str(MR_SMALL), *map(str, ct_files)]
    started = time.monotonic()
    sent = dcmtk(
        "storescu", "-aet", "MODALITY_D1", "-aec", "HOICHAN", "127.0.0.1", str(listener.port), *files
    )
    elapsed = time.monotonic() - started
    assert sent.returncode == 0, sent.stderr
    # A compressed instance keeps its transfer syntax (storescu proposes JPEG 2000 with -xw).
    j2k = dcmtk(
        "storescu",
        "-aet",
        "MODALITY_D1",
        "-aec",
        "HOICHAN",
        "-xw",
        "127.0.0.1",
        str(listener.port),
        str(JPEG2000),
    )
    assert j2k.returncode == 0, j2k.stderr
    files.append(str(JPEG2000))
    assert count(session_factory, Instance) == len(files)
    with session_factory() as session:
        stored = session.scalars(select(Instance)).all()
        by_uid = {i.sop_instance_uid: i for i in stored}
        ct = by_uid[pydicom.dcmread(CT_SMALL, stop_before_pixels=True).SOPInstanceUID]
        assert ct.received_via == "dimse"
        blob = (settings.blob_dir / ct.blob_sha256[:2] / ct.blob_sha256[2:4] / ct.blob_sha256).read_bytes()
        assert (
            pydicom.dcmread(CT_SMALL).PixelData
            == pydicom.dcmread(pydicom.filebase.DicomBytesIO(blob)).PixelData
        )
        facility_ids = set(session.scalars(select(Study.facility_id)))
    assert len(facility_ids) == 1
    # Sent again: idempotent, nothing duplicated.
    again = dcmtk(
        "storescu", "-aet", "MODALITY_D1", "-aec", "HOICHAN", "127.0.0.1", str(listener.port), *files[:-1]
    )
    assert again.returncode == 0, again.stderr
    assert count(session_factory, Instance) == len(files)
    assert elapsed < 30


def test_unknown_ae_stores_nothing(listener: DimseListener, session_factory: sessionmaker[Session]) -> None:
    sent = dcmtk(
        "storescu", "-aet", "STRANGER", "-aec", "HOICHAN", "127.0.0.1", str(listener.port), str(CT_SMALL)
    )
    assert sent.returncode != 0
    assert count(session_factory, Instance) == 0


def test_findscu_and_getscu_query_and_retrieve(
    listener: DimseListener, ct_files: list[Path], session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    assert (
        dcmtk(
            "storescu",
            "-aet",
            "PACS_D1",
            "-aec",
            "HOICHAN",
            "127.0.0.1",
            str(listener.port),
            *map(str, ct_files),
        ).returncode
        == 0
    )
    study_uid = pydicom.dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID
    (tmp_path / "find").mkdir()
    found = dcmtk(
        "findscu",
        "-S",
        "-aet",
        "PACS_D1",
        "-aec",
        "HOICHAN",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID",
        "-k",
        "PatientName=TEST*",
        "-k",
        "NumberOfStudyRelatedInstances",
        "-X",
        "-od",
        str(tmp_path / "find"),
        "127.0.0.1",
        str(listener.port),
    )
    (tmp_path / "find").mkdir(exist_ok=True)
    assert found.returncode == 0, found.stderr
    answers = [pydicom.dcmread(p) for p in sorted((tmp_path / "find").iterdir())]
    assert [a.StudyInstanceUID for a in answers] == [study_uid]
    assert int(answers[0].NumberOfStudyRelatedInstances) == len(ct_files)

    out = tmp_path / "get"
    out.mkdir()
    got = dcmtk(
        "getscu",
        "-S",
        "-aet",
        "PACS_D1",
        "-aec",
        "HOICHAN",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid}",
        "-od",
        str(out),
        "127.0.0.1",
        str(listener.port),
    )
    assert got.returncode == 0, got.stderr
    retrieved = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in out.iterdir()}
    originals = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in ct_files}
    assert retrieved.keys() == originals.keys()
    for uid, original in originals.items():
        assert retrieved[uid].PixelData == original.PixelData


def test_store_only_node_may_not_query(listener: DimseListener, ct_files: list[Path]) -> None:
    found = dcmtk(
        "findscu",
        "-v",
        "-S",
        "-aet",
        "MODALITY_D1",
        "-aec",
        "HOICHAN",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID",
        "127.0.0.1",
        str(listener.port),
    )
    assert "Status: 0x124" in found.stdout + found.stderr, found.stdout + found.stderr
    qr = AE(ae_title="MODALITY_D1")
    qr.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = qr.associate("127.0.0.1", listener.port, ae_title="HOICHAN")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    statuses = [
        status.Status for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
    ]
    assoc.release()
    assert statuses == [0x0124]


def test_pynetdicom_find_and_move_to_own_workstation(
    listener: DimseListener, ct_files: list[Path], dicom_nodes: dict[str, DicomNode]
) -> None:
    ae = AE(ae_title="PACS_D1")
    ae.requested_contexts = AllStoragePresentationContexts[:100]
    store_assoc = ae.associate("127.0.0.1", listener.port, ae_title="HOICHAN")
    assert store_assoc.is_established
    for path in ct_files:
        assert store_assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
    store_assoc.release()

    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    destination = dicom_nodes["PACS_D1"]
    scp = AE(ae_title="PACS_D1")
    scp.supported_contexts = AllStoragePresentationContexts
    server = scp.start_server(
        ("127.0.0.1", destination.port or 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        qr = AE(ae_title="PACS_D1")
        qr.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        qr.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = qr.associate("127.0.0.1", listener.port, ae_title="HOICHAN")
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.SeriesInstanceUID = ""
        query.Modality = "CT"
        answers = [
            i
            for s, i in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
            if s.Status == 0xFF00
        ]
        assert len(answers) == 1
        move = Dataset()
        move.QueryRetrieveLevel = "SERIES"
        move.SeriesInstanceUID = answers[0].SeriesInstanceUID
        statuses = [
            s.Status
            for s, _ in assoc.send_c_move(move, "PACS_D1", StudyRootQueryRetrieveInformationModelMove)
        ]
        assoc.release()
    finally:
        server.shutdown()
    assert statuses[-1] == 0x0000
    assert sorted(received) == sorted(pydicom.dcmread(p).SOPInstanceUID for p in ct_files)
