"""Storage-only associations: the fast upper layer, the durable spool, its replay and its refusals."""

from __future__ import annotations

import hashlib
import socket
import time

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from consult_api.config import Settings
from consult_api.dicom import ingest
from consult_api.dicom.dimse import DimseListener
from consult_api.dicom.models import DicomNode, Instance
from consult_api.dicom.spool import PARTIAL, SPOOLED, file_meta
from consult_api.dicom.upper_layer import StoreRequest
from consult_api.storage.blobs import LocalBlobStore
from consult_api.storage.ring import DurableRing
from tests.conftest import Network
from tests.consult_api.dicom.conftest import CT_SMALL, MR_SMALL

DUPLICATE_INSTANCE = 0x0111
NOT_AUTHORIZED = 0x0124
DATASET_DOES_NOT_MATCH = 0xA900


def store_association(listener: DimseListener, calling: str = "MODALITY_D1"):  # type: ignore[no-untyped-def]
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="HOICHAN")
    assert assoc.is_established
    return assoc


def instances(session_factory: sessionmaker[Session]) -> list[Instance]:
    with session_factory() as session:
        return list(session.scalars(select(Instance)))


def stored_bytes(store: LocalBlobStore, instance: Instance) -> bytes:
    return store.local_path(instance.blob_sha256).read_bytes()


def test_same_bytes_again_succeed_and_changed_bytes_are_refused(
    listener: DimseListener, session_factory: sessionmaker[Session]
) -> None:
    original = pydicom.dcmread(CT_SMALL)
    changed = pydicom.dcmread(CT_SMALL)
    changed.PatientName = "Changed^After^Sending"
    assoc = store_association(listener)
    try:
        assert assoc.send_c_store(original).Status == 0x0000
        assert assoc.send_c_store(original).Status == 0x0000  # idempotent, still spooled or indexed
        assert assoc.send_c_store(changed).Status == DUPLICATE_INSTANCE
    finally:
        assoc.release()  # waits until the association's instances are indexed

    [row] = instances(session_factory)
    data = stored_bytes(listener.spool.store, row)  # type: ignore[arg-type]
    assert hashlib.sha256(data).hexdigest() == row.blob_sha256
    kept = pydicom.dcmread(DicomBytesIO(data))
    assert kept.PatientName == original.PatientName
    assert kept.PixelData == original.PixelData
    # Written by the storage-only layer: the calling AE title is recorded in the file meta.
    assert kept.file_meta.SourceApplicationEntityTitle == "MODALITY_D1"
    # The second association sees the indexed row (not the spool) and refuses the change too.
    again = store_association(listener)
    assert again.send_c_store(changed).Status == DUPLICATE_INSTANCE
    again.release()
    assert listener.spool.backlog == 0


def test_a_node_that_may_not_store_is_refused_per_instance(
    listener: DimseListener, session_factory: sessionmaker[Session]
) -> None:
    assoc = store_association(listener, calling="WORKSTATION_C1")
    try:
        assert assoc.send_c_store(pydicom.dcmread(MR_SMALL)).Status == NOT_AUTHORIZED
    finally:
        assoc.release()
    assert instances(session_factory) == []


def test_an_instance_without_its_study_is_refused_and_leaves_nothing(
    listener: DimseListener, session_factory: sessionmaker[Session]
) -> None:
    incomplete = pydicom.dcmread(CT_SMALL)
    del incomplete.StudyInstanceUID
    assoc = store_association(listener)
    try:
        assert assoc.send_c_store(incomplete).Status == DATASET_DOES_NOT_MATCH
        assert assoc.send_c_store(pydicom.dcmread(MR_SMALL)).Status == 0x0000  # the association goes on
    finally:
        assoc.release()
    assert [i.sop_class_uid for i in instances(session_factory)] == [str(MRImageStorage)]
    spool_dir = listener.spool.directory
    assert not [p for p in spool_dir.iterdir() if p.suffix in (PARTIAL, SPOOLED)]
    assert not list(listener.spool.store.spool_dir("dimse-rejected").iterdir())


def test_a_study_of_another_facility_is_refused_while_its_pixels_arrive(
    listener: DimseListener, session_factory: sessionmaker[Session], network: Network
) -> None:
    """Refused from the header (before the last fragment); nothing stays in the ring or the index."""
    with session_factory.begin() as session:
        session.add(DicomNode(ae_title="MODALITY_D2", facility_id=network.fid("D2"), may_store=True))
    first = store_association(listener)
    assert first.send_c_store(pydicom.dcmread(CT_SMALL)).Status == 0x0000
    first.release()
    same_study = pydicom.dcmread(CT_SMALL)
    same_study.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"

    other = store_association(listener, calling="MODALITY_D2")
    try:
        assert other.send_c_store(same_study).Status == NOT_AUTHORIZED
        assert other.send_c_store(pydicom.dcmread(MR_SMALL)).Status == 0x0000  # the association goes on
    finally:
        other.release()

    assert sorted(i.sop_class_uid for i in instances(session_factory)) == sorted(
        [str(CTImageStorage), str(MRImageStorage)]
    )
    assert listener.spool.ring.live == 0  # the refused instance's slot went back
    assert not list(listener.spool.store.spool_dir("dimse-rejected").iterdir())


def test_an_instance_larger_than_its_slot_is_written_whole_and_stored_intact(
    listener: DimseListener, session_factory: sessionmaker[Session]
) -> None:
    """The slot is sized by the association's last instance; a larger one goes to the ring at the end."""
    small = pydicom.dcmread(CT_SMALL)
    large = pydicom.dcmread(CT_SMALL)
    large.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.78"
    large.Rows = large.Columns = 256
    large.PixelData = bytes(range(256)) * 512  # 256 x 256 x 16 bits: three times the small one
    assoc = store_association(listener)
    try:
        assert assoc.send_c_store(small).Status == 0x0000
        assert assoc.send_c_store(large).Status == 0x0000
    finally:
        assoc.release()

    stored = {row.sop_instance_uid: row for row in instances(session_factory)}
    kept = pydicom.dcmread(DicomBytesIO(stored_bytes(listener.spool.store, stored[large.SOPInstanceUID])))  # type: ignore[arg-type]
    assert kept.PixelData == large.PixelData
    assert kept.Rows == 256
    assert str(small.SOPInstanceUID) in stored
    assert listener.spool.ring.live == 0


def test_an_indexing_failure_is_retried_and_nothing_is_lost(
    listener: DimseListener, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_finish = ingest.finish
    failures: list[int] = []

    def finish_failing_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not failures:
            failures.append(1)
            raise OperationalError("COMMIT", {}, Exception("database is locked"))
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(ingest, "finish", finish_failing_once)
    assoc = store_association(listener)
    assert assoc.send_c_store(pydicom.dcmread(CT_SMALL)).Status == 0x0000
    assoc.release()
    assert failures == [1]
    [row] = instances(session_factory)
    assert listener.spool.store.exists(row.blob_sha256)


def test_a_ring_record_changed_before_indexing_is_quarantined_not_stored(
    listener: DimseListener, session_factory: sessionmaker[Session]
) -> None:
    """The indexer names a blob by the bytes it reads back: it checks them against the record's CRC."""
    listener.spool.linger_s = 30.0  # the record waits in the ring until the association's release
    ct = pydicom.dcmread(CT_SMALL)
    assoc = store_association(listener)
    try:
        assert assoc.send_c_store(ct).Status == 0x0000
        ring_path = listener.spool.ring.path
        at = ring_path.read_bytes().index(str(ct.SOPInstanceUID).encode()) + 4000  # inside the data set
        with open(ring_path, "r+b") as ring_file:
            ring_file.seek(at)
            ring_file.write(bytes([ring_file.read(1)[0] ^ 0xFF]))
    finally:
        assoc.release()  # the indexer reads the record back now

    assert instances(session_factory) == []
    [kept] = list(listener.spool.rejected.iterdir())
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == kept.stem  # the damaged bytes, for an admin
    assert listener.spool.backlog == 0
    assert listener.spool.ring.live == 0


def test_what_a_crash_left_in_the_spool_is_indexed_at_the_next_start(
    session_factory: sessionmaker[Session], settings: Settings, dicom_nodes: dict[str, DicomNode]
) -> None:
    store = LocalBlobStore(settings.blob_dir)
    spool_dir = store.spool_dir("dimse")
    # An acknowledged instance in the ring, as the listener writes it (file meta with the sender) ...
    ct = pydicom.dcmread(CT_SMALL)
    request = StoreRequest(ct.SOPClassUID, ct.SOPInstanceUID, ct.file_meta.TransferSyntaxUID, "MODALITY_D1")
    body = CT_SMALL.read_bytes()
    ds_start = _data_set_offset(body)
    record = file_meta(request) + body[ds_start:]
    ring = DurableRing(spool_dir / "ring", 16 << 20)
    ring.open()
    ring.append(record, "MODALITY_D1")
    ring.close()
    # ... an acknowledged one too large for the ring, spooled as a file ...
    mr = pydicom.dcmread(MR_SMALL)
    mr.file_meta.SourceApplicationEntityTitle = "MODALITY_D1"
    mr_path = spool_dir / f"put-crash{SPOOLED}"
    mr.save_as(mr_path, enforce_file_format=True)
    # ... and one whose receipt never finished (never acknowledged).
    (spool_dir / f"put-torn{PARTIAL}").write_bytes(body[:3000])

    listener = DimseListener(
        session_factory, store, ae_title="HOICHAN", host="127.0.0.1", port=0, spool_ring_bytes=16 << 20
    )
    listener.start()
    try:
        deadline_ok = _wait_for(lambda: len(instances(session_factory)) == 2)
    finally:
        listener.stop()
    assert deadline_ok
    rows = {i.sop_instance_uid: i for i in instances(session_factory)}
    assert set(rows) == {ct.SOPInstanceUID, mr.SOPInstanceUID}
    assert pydicom.dcmread(store.local_path(rows[ct.SOPInstanceUID].blob_sha256)).PixelData == ct.PixelData
    assert not list(spool_dir.glob(f"*{PARTIAL}")) and not list(spool_dir.glob(f"*{SPOOLED}"))
    # Released: a further start replays nothing.
    again = DimseListener(
        session_factory, store, ae_title="HOICHAN", host="127.0.0.1", port=0, spool_ring_bytes=16 << 20
    )
    again.start()
    again.stop()
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 2


def _data_set_offset(part10: bytes) -> int:
    ds = pydicom.dcmread(DicomBytesIO(part10), stop_before_pixels=True)
    meta_length = int(ds.file_meta.FileMetaInformationGroupLength)
    return 132 + 12 + meta_length  # preamble + DICM, the group length element, the group


def _wait_for(condition, timeout_s: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_without_its_ring_the_listener_spools_files_and_stores_all(
    session_factory: sessionmaker[Session], settings: Settings, dicom_nodes: dict[str, DicomNode]
) -> None:
    store = LocalBlobStore(settings.blob_dir)
    squatter = DurableRing(store.spool_dir("dimse") / "ring", 16 << 20)  # another process holds it
    squatter.open()
    listener = DimseListener(
        session_factory, store, ae_title="HOICHAN", host="127.0.0.1", port=0, spool_ring_bytes=16 << 20
    )
    listener.start()
    try:
        assoc = store_association(listener)
        try:
            assert assoc.send_c_store(pydicom.dcmread(CT_SMALL)).Status == 0x0000
            assert assoc.send_c_store(pydicom.dcmread(MR_SMALL)).Status == 0x0000
        finally:
            assoc.release()
    finally:
        listener.stop()
        squatter.close()
    assert len(instances(session_factory)) == 2
    assert not list(store.spool_dir("dimse").glob(f"*{SPOOLED}"))


def test_file_meta_is_what_pydicom_would_write() -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    request = StoreRequest("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2.1", "MODALITY_D1")
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(request.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(request.sop_instance_uid)
    meta.TransferSyntaxUID = UID(request.transfer_syntax_uid)
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    meta.SourceApplicationEntityTitle = request.calling_ae_title
    expected = DicomBytesIO()
    expected.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(expected, meta, enforce_standard=True)
    assert file_meta(request) == expected.getvalue()


def test_admission_follows_studies_and_series_another_door_creates_meanwhile(
    session_factory: sessionmaker[Session], settings: Settings, dicom_nodes: dict[str, DicomNode]
) -> None:
    """A series STOW-RS creates between an association's lookups is not 'under another study'."""
    from consult_api.db import autocommit_connection
    from consult_api.dicom import nodes, parsing
    from consult_api.dicom.ingest import Admissions, IngestContext, check_admissible, is_duplicate

    store = LocalBlobStore(settings.blob_dir)
    with session_factory() as session:
        principal = nodes.node_principal(session.merge(dicom_nodes["MODALITY_D1"]))
    first = pydicom.dcmread(CT_SMALL)
    same_study_other_series = pydicom.dcmread(CT_SMALL)
    same_study_other_series.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    same_study_other_series.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    elsewhere = pydicom.dcmread(MR_SMALL)
    elsewhere.SeriesInstanceUID = same_study_other_series.SeriesInstanceUID  # a series claimed twice
    elsewhere.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.3"

    def parsed(ds: pydicom.Dataset) -> parsing.ParsedInstance:
        data = _part10(ds)
        return parsing.parse_stream(DicomBytesIO(data), len(data))

    admitted = Admissions()
    connection = autocommit_connection(session_factory)
    try:
        assert check_admissible(connection, principal, admitted, parsed(first)) is None
        # Meanwhile STOW-RS stores the other series of the same study.
        staged = store.stage([_part10(same_study_other_series)])
        with session_factory.begin() as session:
            ctx = IngestContext(principal=principal, via="stow")
            [outcome] = ingest.store_many(session, store, ctx, [staged])
            assert outcome.ok
        other_sop = pydicom.dcmread(CT_SMALL)
        other_sop.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.4"
        other_sop.SeriesInstanceUID = same_study_other_series.SeriesInstanceUID
        # The study was checked while it did not exist yet; its new series is found under it.
        assert check_admissible(connection, principal, admitted, parsed(other_sop)) is None
        with pytest.raises(parsing.DicomRejected) as refused:
            check_admissible(connection, principal, admitted, parsed(elsewhere))
        assert refused.value.reason == DATASET_DOES_NOT_MATCH
        # What STOW-RS stored answers with its digest: the same bytes again are a duplicate, others not.
        stored = parsed(same_study_other_series)
        known = check_admissible(connection, principal, admitted, stored)
        assert known == staged.ref.sha256
        assert is_duplicate(known, staged.ref.sha256, stored) is True
        with pytest.raises(parsing.DicomRejected) as conflict:
            is_duplicate(known, "f" * 64, stored)
        assert conflict.value.reason == parsing.DUPLICATE_INSTANCE
    finally:
        connection.close()


def _part10(ds: pydicom.Dataset) -> bytes:
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_port_probe_is_closed_without_an_association(
    listener: DimseListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TCP checks (connect, close) never reach pynetdicom; a query association still does.

    Before, each probe became a pynetdicom association whose thread polled the closed socket (three
    such threads were seen alive 0.3 s after three probes on a busy machine).
    """
    handed_over: list[object] = []
    serve = ThreadedAssociationServer.process_request_thread

    def counting(server: ThreadedAssociationServer, request: object, client_address: object) -> None:
        handed_over.append(client_address)
        serve(server, request, client_address)

    monkeypatch.setattr(ThreadedAssociationServer, "process_request_thread", counting)
    for _ in range(3):
        socket.create_connection(("127.0.0.1", listener.port), timeout=5).close()
    ae = AE(ae_title="MODALITY_D1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="HOICHAN")
    if assoc.is_established:
        assoc.release()
    assert len(handed_over) == 1  # the query's association only (storage-only ones are served by us)
