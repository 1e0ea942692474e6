"""A STOW-RS request is stored as one batch; whatever is unusual inside it still gets its own outcome.

The batch path (one duplicate lookup, one savepoint, one multi-row INSERT) falls back to
instance-by-instance storage when an instance may not join the batch; these tests pin that the
outcomes, the index, the counters and the blob store are exactly those of the one-by-one path.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.config import Settings
from consult_api.dicom import parsing
from consult_api.dicom.models import Series, Study
from tests.conftest import Actors, Network
from tests.consult_api.dicom.conftest import CT_SMALL, MR_SMALL, stow
from tests.consult_api.dicom.test_dicomweb import blob_files, index_counts

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


def _variant(source: Path, **changes: str) -> bytes:
    """``source`` with some attributes changed (new UIDs make a new instance, series or study)."""
    ds = pydicom.dcmread(source)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
        if keyword == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = value
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _failures(response_json: dict[str, object]) -> list[int]:
    failed = response_json.get("00081198", {"Value": []})
    return [item["00081197"]["Value"][0] for item in failed["Value"]]  # type: ignore[index]


def _counters(factory: sessionmaker[Session]) -> dict[str, tuple[int, int]]:
    with factory() as session:
        studies = {
            s.study_instance_uid: (s.number_of_series, s.number_of_instances)
            for s in session.scalars(select(Study))
        }
        for series in session.scalars(select(Series)):
            assert series.number_of_instances >= 1
        return studies


def test_a_series_in_one_request_is_counted_exactly(
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    ct_files: list[Path],
) -> None:
    response = stow(client, as_["ref_d1"], [p.read_bytes() for p in ct_files])
    assert response.status_code == 200, response.text
    assert index_counts(session_factory) == (1, 1, len(ct_files))
    assert list(_counters(session_factory).values()) == [(1, len(ct_files))]
    # The same request again: every instance an idempotent duplicate, nothing counted twice.
    assert stow(client, as_["ref_d1"], [p.read_bytes() for p in ct_files]).status_code == 200
    assert list(_counters(session_factory).values()) == [(1, len(ct_files))]


def test_the_same_uid_twice_in_one_request(
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    original = CT_SMALL.read_bytes()
    changed = _variant(CT_SMALL, PatientName="Changed^Name")
    response = stow(client, as_["ref_d1"], [original, original, changed])
    assert response.status_code == 202, response.text
    assert _failures(response.json()) == [parsing.DUPLICATE_INSTANCE]
    assert len(response.json()["00081199"]["Value"]) == 2  # stored, then its idempotent repeat
    assert index_counts(session_factory) == (1, 1, 1)
    assert list(_counters(session_factory).values()) == [(1, 1)]
    assert len(blob_files(settings)) == 1


def test_a_study_of_another_facility_fails_alone(
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    assert stow(client, as_["ref_d2"], [CT_SMALL.read_bytes()]).status_code == 200
    intruder = _variant(CT_SMALL, SOPInstanceUID=generate_uid())  # same study, D2's
    response = stow(client, as_["ref_d1"], [MR_SMALL.read_bytes(), intruder])
    assert response.status_code == 202, response.text
    assert _failures(response.json()) == [parsing.NOT_AUTHORIZED]
    assert index_counts(session_factory) == (2, 2, 2)  # D2's CT and D1's MR, nothing more
    assert sorted(_counters(session_factory).values()) == [(1, 1), (1, 1)]
    assert len(blob_files(settings)) == 2
    assert list((settings.blob_dir / "tmp").iterdir()) == []


def test_a_series_under_another_study_leaves_no_empty_study(
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    assert stow(client, as_["ref_d1"], [CT_SMALL.read_bytes()]).status_code == 200
    # A new study that claims the stored series: refused, and its study row must not stay behind.
    misfiled = _variant(CT_SMALL, SOPInstanceUID=generate_uid(), StudyInstanceUID=generate_uid())
    sibling = _variant(CT_SMALL, SOPInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid())
    response = stow(client, as_["ref_d1"], [sibling, misfiled, MR_SMALL.read_bytes()])
    assert response.status_code == 202, response.text
    assert _failures(response.json()) == [parsing.DATASET_DOES_NOT_MATCH]
    assert index_counts(session_factory) == (2, 3, 3)  # CT study (2 series), MR study
    assert sorted(_counters(session_factory).values()) == [(1, 1), (2, 2)]
    assert len(blob_files(settings)) == 3


def test_concurrent_requests_into_one_new_series_lose_nothing(
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    settings: Settings,
    backend: str,
) -> None:
    """Requests racing to create the same study and series: on PostgreSQL the loser's batch hits
    the unique index, rolls back its savepoint and goes instance by instance; all are counted."""
    rounds, per_request, clients = 3, 5, 4
    for _ in range(rounds):
        study, series = generate_uid(), generate_uid()
        bodies = [
            [
                _variant(
                    CT_SMALL, StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=generate_uid()
                )
                for _ in range(per_request)
            ]
            for _ in range(clients)
        ]
        with ThreadPoolExecutor(clients) as pool:
            statuses = list(pool.map(lambda parts: stow(client, as_["ref_d1"], parts).status_code, bodies))
        assert statuses == [200] * clients
    total = rounds * per_request * clients
    assert index_counts(session_factory) == (rounds, rounds, total)
    assert sorted(_counters(session_factory).values()) == [(1, per_request * clients)] * rounds
    assert len(blob_files(settings)) == total
