"""Header parsing: the prefix parses a receiver runs while pixels arrive agree with the whole parse."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from consult_api.dicom import parsing
from consult_api.dicom.spool import file_meta
from consult_api.dicom.upper_layer import StoreRequest
from tests.consult_api.dicom.conftest import CT_SMALL, MR_SMALL

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


def received(path: Path, syntax: str, *, drop: str | None = None) -> tuple[bytes, int]:
    """An instance as the DIMSE receiver holds it: our file meta, then the data set in ``syntax``."""
    ds = pydicom.dcmread(path)
    if drop is not None:
        delattr(ds, drop)
    request = StoreRequest(str(ds.SOPClassUID), str(ds.get("SOPInstanceUID", "1.2.3")), syntax, "MODALITY")
    meta = file_meta(request)
    body = DicomBytesIO()
    body.is_little_endian = UID(syntax).is_little_endian
    body.is_implicit_VR = UID(syntax).is_implicit_VR
    write_dataset(body, ds)
    return meta + body.getvalue(), len(meta)


@pytest.mark.parametrize("path", [CT_SMALL, MR_SMALL], ids=["CT", "MR"])
@pytest.mark.parametrize("syntax", [IMPLICIT, EXPLICIT], ids=["implicit", "explicit"])
def test_the_received_prefix_parse_agrees_with_the_whole_parse(path: Path, syntax: str) -> None:
    data, dataset_start = received(path, syntax)
    whole, whole_pixels_at = parsing.parse_header(io.BytesIO(data), len(data))
    assert whole_pixels_at is not None

    found = parsing.parse_received_prefix(data[: whole_pixels_at + 16], dataset_start, syntax)

    assert found is not None
    early, pixels_at = found
    assert pixels_at == whole_pixels_at
    assert early.transfer_syntax_uid == syntax
    uids = ("sop_class_uid", "sop_instance_uid", "study_instance_uid", "series_instance_uid")
    assert [getattr(early, name) for name in uids] == [getattr(whole, name) for name in uids]
    assert early.get("PatientName") == whole.get("PatientName")
    # The rest of the instance still decides completeness, from where the prefix parse stopped.
    parsing.check_complete(early, io.BytesIO(data), len(data), pixels_at)
    with pytest.raises(parsing.DicomRejected) as truncated:
        parsing.check_complete(early, io.BytesIO(data[:-100]), len(data) - 100, pixels_at)
    assert truncated.value.reason == parsing.CANNOT_UNDERSTAND


def test_a_prefix_that_ends_before_pixel_data_is_left_to_the_whole_instance() -> None:
    data, dataset_start = received(CT_SMALL, EXPLICIT)
    _, pixels_at = parsing.parse_header(io.BytesIO(data), len(data))
    assert pixels_at is not None
    for cut in (dataset_start + 7, dataset_start + 300, pixels_at - 1, pixels_at + 2):
        assert parsing.parse_received_prefix(data[:cut], dataset_start, EXPLICIT) is None
        assert parsing.parse_prefix(data[:cut]) is None


def test_deflated_big_endian_and_unsupported_syntaxes_are_parsed_whole() -> None:
    data, dataset_start = received(CT_SMALL, EXPLICIT)
    assert parsing.parse_received_prefix(data, dataset_start, str(DeflatedExplicitVRLittleEndian)) is None
    assert parsing.parse_received_prefix(data, dataset_start, "1.2.840.10008.1.2.4.100") is None  # MPEG2
    big_endian, start = received(CT_SMALL, str(ExplicitVRBigEndian))
    assert parsing.parse_received_prefix(big_endian, start, str(ExplicitVRBigEndian)) is None
    whole, pixels_at = parsing.header_in(big_endian)  # pydicom reads the retired syntax whole
    assert pixels_at is not None and whole.get("PatientName") == pydicom.dcmread(CT_SMALL).PatientName


def test_an_instance_without_its_uid_is_not_admitted_early() -> None:
    data, dataset_start = received(CT_SMALL, EXPLICIT, drop="SOPInstanceUID")
    assert parsing.parse_received_prefix(data, dataset_start, EXPLICIT) is None
    with pytest.raises(parsing.DicomRejected) as refused:  # the end-of-instance parse gives the reason
        parsing.parse_stream(io.BytesIO(data), len(data))
    assert refused.value.reason == parsing.DATASET_DOES_NOT_MATCH
