"""The fast element walk against pydicom: every bundled test file reads the same either way.

The walk either declines (and pydicom decides, as before) or gives the same header: the same UIDs,
transfer syntax, Pixel Data offset and every top-level value as pydicom decodes it, and the same
verdict on a file cut short.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from consult_api.dicom import element_walk, parsing
from consult_api.dicom.element_walk import Incomplete, Unusual

UIDS = (
    "sop_class_uid",
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "transfer_syntax_uid",
)


def _bundled() -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that it cannot download its extra files
        return sorted(Path(p) for p in get_testdata_files("*.dcm"))


BUNDLED = _bundled()


def _outcome(parse: object, data: bytes | Path) -> tuple[str, object]:
    """("ok", parsed) or ("refused", reason) or ("error", exception type) for one parse function."""
    try:
        return "ok", parse(data)  # type: ignore[operator]
    except parsing.DicomRejected as exc:
        return "refused", exc.reason
    except Exception as exc:  # noqa: BLE001 - pydicom's own failures are compared by type
        return "error", type(exc).__name__


def _pydicom_header(data: bytes) -> tuple[parsing.ParsedInstance, int | None]:
    return parsing.parse_header(io.BytesIO(data), len(data))


def _pydicom_whole(data: bytes) -> parsing.ParsedInstance:
    return parsing.parse_stream(io.BytesIO(data), len(data))


def _values(ds: Dataset) -> dict[str, object]:
    """Every top-level value pydicom decodes (sequences as their items' values), by keyword or tag."""
    out: dict[str, object] = {}
    for element in ds:
        if element.tag >> 16 == 0x0002 or element.tag in element_walk.PIXEL_DATA_TAGS:
            continue
        value = element.value
        if element.VR == "SQ":
            value = [_values(item) for item in value]
        out[element.keyword or str(element.tag)] = value
    return out


def test_most_bundled_files_take_the_fast_walk() -> None:
    """Not a vacuous comparison: the plain files (CT, MR, JPEG, RLE ...) are walked, not declined."""
    walked = 0
    for path in BUNDLED:
        try:
            element_walk.walk_part10(path.read_bytes())
            walked += 1
        except (Unusual, Incomplete):
            pass
    assert len(BUNDLED) > 50
    assert walked > len(BUNDLED) // 2, f"{walked} of {len(BUNDLED)} walked"


@pytest.mark.parametrize("path", BUNDLED, ids=[p.name for p in BUNDLED])
def test_the_header_reads_the_same_as_pydicom_reads_it(path: Path) -> None:
    data = path.read_bytes()
    fast, slow = _outcome(parsing.header_in, data), _outcome(_pydicom_header, data)
    assert fast[0] == slow[0] or (fast[0], slow[0]) == ("refused", "error"), (fast, slow)
    if fast[0] != "ok":
        if slow[0] == "refused":
            assert fast == slow
        return
    (parsed, pixels_at), (expected, expected_pixels_at) = fast[1], slow[1]  # type: ignore[misc]
    assert pixels_at == expected_pixels_at
    assert [getattr(parsed, name) for name in UIDS] == [getattr(expected, name) for name in UIDS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _values(parsed.dataset) == _values(expected.dataset)
        assert parsed.dataset.file_meta == expected.dataset.file_meta


@pytest.mark.parametrize("path", BUNDLED, ids=[p.name for p in BUNDLED])
def test_whole_and_cut_short_files_get_the_verdict_pydicom_gives(path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    for size in sorted({len(data), len(data) - 3, len(data) - 100, len(data) // 2, 600}):
        if size <= 0:
            continue
        cut = data[:size]
        fast, slow = _outcome(parsing.parse_buffer, cut), _outcome(_pydicom_whole, cut)
        on_disk = tmp_path / f"{size}.dcm"
        on_disk.write_bytes(cut)
        from_file = _outcome(parsing.parse_instance, on_disk)
        assert from_file[0] == fast[0], (size, from_file, fast)  # read from a file as from memory
        if fast[0] == "refused":
            assert from_file[1] == fast[1], (size, from_file, fast)
        if slow[0] == "error":
            # pydicom itself fails outright on some cuts; the walk may refuse them precisely instead.
            assert fast[0] in ("refused", "error"), (size, fast, slow)
            continue
        assert fast[0] == slow[0], (size, fast, slow)
        if fast[0] == "ok":
            assert [getattr(fast[1], name) for name in UIDS] == [getattr(slow[1], name) for name in UIDS]
        else:
            assert fast[1] == slow[1], (size, fast, slow)


def _instance(syntax: UID, *, encapsulated: bool = False) -> bytes:
    """A Part-10 instance with nested sequences of undefined length before its pixels."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (generate_uid() for _ in range(3))
    ds.PatientName = "NGUYEN^VAN A"
    ds.SpecificCharacterSet = "ISO_IR 192"
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D3000", "SRT", "Ngực"
    outer = Dataset()
    outer.ConceptNameCodeSequence = Sequence([inner])
    ds.ContentSequence = Sequence([outer, Dataset()])
    for holder, keyword in ((ds, "ContentSequence"), (outer, "ConceptNameCodeSequence")):
        holder[keyword].is_undefined_length = True  # pydicom writes defined lengths unless told
        for item in holder[keyword].value:
            item.is_undefined_length_sequence_item = True
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.SamplesPerPixel = 8, 1
    ds.PixelData = encapsulate([b"\xff\xd8fragment\xff\xd9"]) if encapsulated else bytes(16)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=syntax.is_implicit_VR, little_endian=True)
    data = buffer.getvalue()
    assert b"\xfe\xff\xdd\xe0" in data and b"\xfe\xff\x0d\xe0" in data  # delimiters, as meant
    return data


@pytest.mark.parametrize(
    ("syntax", "encapsulated"),
    [(ImplicitVRLittleEndian, False), (ExplicitVRLittleEndian, False), (JPEGBaseline8Bit, True)],
    ids=["implicit", "explicit", "encapsulated"],
)
def test_nested_sequences_of_undefined_length_are_walked_and_read_back(
    syntax: UID, encapsulated: bool
) -> None:
    data = _instance(syntax, encapsulated=encapsulated)
    walked = element_walk.walk_part10(data)  # not declined
    assert walked.pixel_data_at is not None
    assert element_walk.dataset_end(data, walked.pixel_data_at, syntax.is_implicit_VR) == len(data)
    parsed = parsing.parse_buffer(data)
    expected = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert parsed.get("ContentSequence")[0].ConceptNameCodeSequence[0].CodeMeaning == "Ngực"
    assert _values(parsed.dataset) == _values(expected)
    with pytest.raises(parsing.DicomRejected) as truncated:
        parsing.parse_buffer(data[:-9])  # the sequence delimiter of the fragments (or pixels) cut
    assert truncated.value.reason == parsing.CANNOT_UNDERSTAND


def test_what_the_walk_declines_pydicom_still_reads() -> None:
    ct = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    data = bytearray(ct.read_bytes())
    walked = element_walk.walk_part10(bytes(data))
    first = min(walked.elements)
    data[walked.elements[first].value_tell - 4 : walked.elements[first].value_tell - 2] = b"zz"  # bad VR
    with pytest.raises(Unusual):
        element_walk.walk_part10(bytes(data))
    no_preamble = ct.read_bytes()[132:]
    with pytest.raises(Unusual):
        element_walk.walk_part10(b"\0" * 128 + b"NOPE" + no_preamble)
    with pytest.raises(parsing.DicomRejected) as refused:
        parsing.parse_buffer(b"\0" * 128 + b"NOPE" + no_preamble)
    assert refused.value.reason == parsing.CANNOT_UNDERSTAND


def test_a_prefix_is_incomplete_until_it_reaches_pixel_data() -> None:
    data = _instance(ExplicitVRLittleEndian)
    pixels_at = element_walk.walk_part10(data).pixel_data_at
    assert pixels_at is not None
    for cut in (100, 140, pixels_at - 1, pixels_at + 4):
        with pytest.raises(Incomplete):
            element_walk.walk_part10(data[:cut])
    assert element_walk.walk_part10(data[: pixels_at + 12]).pixel_data_at == pixels_at  # its header read


def test_a_mapped_file_parses_as_its_bytes_do(tmp_path: Path) -> None:
    data = _instance(ExplicitVRLittleEndian)
    path = tmp_path / "instance.dcm"
    path.write_bytes(data)
    from_file, from_memory = parsing.parse_instance(path), parsing.parse_buffer(data)
    assert [getattr(from_file, n) for n in UIDS] == [getattr(from_memory, n) for n in UIDS]
    assert from_file.get("PatientName") == "NGUYEN^VAN A"
    path.write_bytes(data[:-5])
    with pytest.raises(parsing.DicomRejected):
        parsing.parse_instance(path)


def _ct_with(**extra: object) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def _saved(ds: Dataset, path: Path, trailer: bytes = b"") -> bytes:
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes() + trailer
    path.write_bytes(data)
    return data


@pytest.mark.parametrize(
    ("extra", "trailer"),
    [
        ({"TextValue": "x" * (parsing.HEAD_BYTES + 1000)}, b""),  # a header longer than the head
        ({}, b"\xfc\xff\xfc\xff" + b"OB\0\0" + (4).to_bytes(4, "little") + b"\0" * 4),  # trailing padding
        ({}, b"\0" * 5),  # fewer bytes than an element header after the pixels: padding too
    ],
    ids=["long-header", "trailing-padding-element", "short-tail"],
)
def test_a_file_read_in_parts_parses_as_pydicom_reads_it(
    extra: dict[str, object], trailer: bytes, tmp_path: Path
) -> None:
    """The header read on its own and the tail after native Pixel Data: the same verdict as all of it."""
    path = tmp_path / "instance.dcm"
    data = _saved(_ct_with(**extra), path, trailer)
    parsed = parsing.parse_instance(path)
    expected = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert parsed.sop_instance_uid == expected.SOPInstanceUID
    assert _values(parsed.dataset) == _values(expected)
    for cut in (len(data) - len(trailer) - 1, len(data) - 2):  # inside the pixels or the trailer
        path.write_bytes(data[:cut])
        from_file, from_memory = (
            _outcome(parsing.parse_instance, path),
            _outcome(parsing.parse_buffer, data[:cut]),
        )
        assert from_file[0] == from_memory[0], (cut, from_file, from_memory)
        if from_file[0] != "ok":
            assert from_file == from_memory


def test_pixel_data_whose_header_the_head_cuts_is_read_whole(tmp_path: Path) -> None:
    """Pixel Data starting 10 bytes before the head's end: its 12-byte header is not all in the head."""
    path = tmp_path / "instance.dcm"
    padding = 1000
    data = _saved(_ct_with(TextValue="x" * padding), path)
    pixels_at = element_walk.walk_part10(data).pixel_data_at
    assert pixels_at is not None
    padding += parsing.HEAD_BYTES - 10 - pixels_at
    data = _saved(_ct_with(TextValue="x" * padding), path)
    assert element_walk.walk_part10(data).pixel_data_at == parsing.HEAD_BYTES - 10
    assert parsing.parse_instance(path).sop_instance_uid == pydicom.dcmread(path).SOPInstanceUID
    path.write_bytes(data[:-1])
    with pytest.raises(parsing.DicomRejected):
        parsing.parse_instance(path)
