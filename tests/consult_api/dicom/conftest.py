"""DICOM fixtures: real test files, a generated CT series, STOW helpers, a running DIMSE listener."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from sqlalchemy.orm import Session, sessionmaker

from consult_api.dicom.dimse import DimseListener
from consult_api.dicom.models import DicomNode
from consult_api.storage.blobs import LocalBlobStore
from tests.conftest import Network, free_port

BOUNDARY = "hoichan-test-boundary"
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))  # type: ignore[arg-type]
JPEG2000 = Path(get_testdata_file("JPEG2000.dcm"))  # type: ignore[arg-type]


def related_body(parts: list[bytes], content_type: str = "application/dicom") -> bytes:
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n" for part in parts
    )
    return body + f"--{BOUNDARY}--\r\n".encode()


STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def stow(client: TestClient, headers: dict[str, str], parts: list[bytes], url: str = "/dicom-web/studies"):  # type: ignore[no-untyped-def]
    return client.post(url, content=related_body(parts), headers={**headers, "Content-Type": STOW_TYPE})


@pytest.fixture
def dicom_nodes(session_factory: sessionmaker[Session], network: Network) -> dict[str, DicomNode]:
    """MODALITY_D1 stores for D1; WORKSTATION_C1 queries for C1 and receives C-MOVEs on a port."""
    nodes = {
        "MODALITY_D1": DicomNode(ae_title="MODALITY_D1", facility_id=network.fid("D1"), may_store=True),
        "WORKSTATION_C1": DicomNode(
            ae_title="WORKSTATION_C1",
            facility_id=network.fid("C1"),
            may_store=False,
            may_query=True,
            host="127.0.0.1",
            port=free_port(),
        ),
        "PACS_D1": DicomNode(
            ae_title="PACS_D1",
            facility_id=network.fid("D1"),
            may_store=True,
            may_query=True,
            host="127.0.0.1",
            port=free_port(),
        ),
    }
    with session_factory.begin() as session:
        session.add_all(nodes.values())
    return nodes


@pytest.fixture
def listener(session_factory: sessionmaker[Session], settings, dicom_nodes) -> Iterator[DimseListener]:  # type: ignore[no-untyped-def]
    dimse = DimseListener(
        session_factory,
        LocalBlobStore(settings.blob_dir),
        ae_title="HOICHAN",
        host="127.0.0.1",
        port=0,
        spool_ring_bytes=16 << 20,
    )
    dimse.start()
    yield dimse
    dimse.stop()
