"""Read and check a Part-10 file's header without decoding pixels.

pydicom reads a truncated file without complaint (a missing tail of Pixel Data just vanishes), so
completeness is checked separately: every top-level element must end inside the file.
"""

from __future__ import annotations

import io
import mmap
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from consult_api.dicom import element_walk
from consult_api.dicom.element_walk import PIXEL_DATA_TAGS, UNDEFINED_LENGTH, Buffer, Incomplete, Unusual

DEFLATED = str(DeflatedExplicitVRLittleEndian)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# STOW-RS / C-STORE failure reasons (PS3.4 / PS3.18)
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
SOP_CLASS_NOT_SUPPORTED = 0x0122
DATASET_DOES_NOT_MATCH = 0xA900
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
NOT_AUTHORIZED = 0x0124

SUPPORTED_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.203",  # HTJ2K
        "1.2.840.10008.1.2.5",  # RLE Lossless
    }
)


class DicomRejected(Exception):
    """An instance that cannot be stored, with the DICOM failure reason to report."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ParsedInstance:
    """The identifying header of one instance, checked and ready to index."""

    dataset: Dataset
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.dataset.get(keyword, default)


_UID_TAGS = {
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}


def _uid_value(ds: Dataset, keyword: str) -> str:
    """The UID as text, from the undecoded element when it is a plain one (no ``DataElement`` built)."""
    raw = ds.get_item(_UID_TAGS[keyword], keep_deferred=True)  # None when absent
    if isinstance(raw, RawDataElement):
        text = element_walk.uid_text(raw.value)
        if text is not None:
            return text
    return str(ds.get(keyword, "") or "").strip()


def _check_uid(ds: Dataset, keyword: str) -> str:
    value = _uid_value(ds, keyword)
    if not value:
        raise DicomRejected(DATASET_DOES_NOT_MATCH, f"{keyword} is missing")
    if len(value) > 64 or not _UID.match(value):
        raise DicomRejected(DATASET_DOES_NOT_MATCH, f"{keyword} {value[:70]!r} is not a valid UID")
    return value


def _check_transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return _supported(str(getattr(meta, "TransferSyntaxUID", "") or ""))


def _supported(syntax: str) -> str:
    if not syntax:
        raise DicomRejected(CANNOT_UNDERSTAND, "file meta has no Transfer Syntax UID")
    if syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        name = UID(syntax).name if syntax else ""
        raise DicomRejected(TRANSFER_SYNTAX_NOT_SUPPORTED, f"transfer syntax {syntax} ({name}) not supported")
    return syntax


def _dataset_end(stream: BinaryIO, syntax: UID, start: int | None = None) -> int:
    """Where the last top-level element ends, walking element headers only (values are skipped).

    ``start``: where the header parse stopped, at the top-level Pixel Data tag. Every element before
    it was read in full to get there, so the walk only has to cover Pixel Data and what follows;
    without it the walk starts after the file meta.
    """
    if start is None:
        stream.seek(0)
        read_preamble(stream, False)
        _read_file_meta_info(stream)
    else:
        stream.seek(start)
    end = stream.tell()
    generator = data_element_generator(stream, syntax.is_implicit_VR, syntax.is_little_endian, defer_size=256)
    for element in generator:
        if isinstance(element, RawDataElement) and element.length != UNDEFINED_LENGTH:
            end = element.value_tell + element.length
        else:
            end = stream.tell()
    return end


def check_complete(parsed: ParsedInstance, stream: BinaryIO, size: int, pixel_data_at: int | None) -> None:
    """Every top-level element ends inside ``size`` bytes; raises ``DicomRejected`` if not."""
    syntax = parsed.transfer_syntax_uid
    if syntax == DEFLATED:
        return  # deflated: pydicom inflates while reading; a truncated stream fails to inflate
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # pydicom only warns when a delimiter is missing at EOF
            end = _dataset_end(stream, UID(syntax), pixel_data_at)
    except (EOFError, UserWarning, ValueError, OSError) as exc:
        raise DicomRejected(CANNOT_UNDERSTAND, f"file is truncated or corrupt: {exc}") from exc
    if end > size:
        raise DicomRejected(
            CANNOT_UNDERSTAND, f"file is truncated: elements end at byte {end}, file has {size}"
        )


def _read_header(stream: BinaryIO) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(stream, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise DicomRejected(CANNOT_UNDERSTAND, "not a DICOM Part-10 file (no 'DICM' preamble)") from exc
    except Exception as exc:
        raise DicomRejected(CANNOT_UNDERSTAND, f"cannot parse DICOM header: {type(exc).__name__}") from exc


PIXEL_DATA_TAG_BYTES = frozenset(
    struct.pack(order, tag >> 16, tag & 0xFFFF) for tag in PIXEL_DATA_TAGS for order in ("<HH", ">HH")
)


def _at_pixel_data(stream: BinaryIO, position: int, size: int) -> bool:
    """Did the header parse stop at a Pixel Data tag (not at the end of a short or pixel-less file)?"""
    if position + 4 > size:
        return False
    stream.seek(position)
    return stream.read(4) in PIXEL_DATA_TAG_BYTES


HEAD_BYTES = 64 * 1024
"""What ``parse_instance`` reads first. A CT or MR header is 1-3 KB; one with an icon or a large private
group can be tens of KB; a longer one is mapped whole."""


def parse_instance(path: Path, *, head: bytes = b"") -> ParsedInstance:
    """Parse and validate one Part-10 file; raises ``DicomRejected`` with a failure reason.

    Read, not mapped: the header, then the few bytes after native Pixel Data. Why not ``mmap``: in a
    busy ingest server a mapping and its removal took ~0.5 ms per instance (the process-wide
    memory-map lock and, on a VM, the TLB flush of the other cores), 5x the walk itself.

    ``head``: the file's first ``min(size, HEAD_BYTES)`` bytes where the caller still has them (a
    writer that bypassed the page cache), so the header is not read back from the disk.
    """
    with path.open("rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size > element_walk.PREAMBLE:
            parsed = _parse_read(stream.fileno(), size, head)
            if parsed is not None:
                return parsed
        return parse_stream(stream, size)


def _parse_read(fd: int, size: int, head: bytes) -> ParsedInstance | None:
    """``_parse_walked`` from the header's bytes; the whole file mapped where those do not settle it."""
    if len(head) != min(size, HEAD_BYTES):
        head = os.pread(fd, min(size, HEAD_BYTES), 0)
    if len(head) == size:
        return _parse_walked(head)
    parsed, pixel_data_at = _walked_header(head) or (None, None)
    if parsed is None or pixel_data_at is None:
        return _parse_mapped(fd)  # a header past HEAD_BYTES, or no Pixel Data in it: look at all of it
    implicit = element_walk.is_implicit(parsed.transfer_syntax_uid)
    try:
        pixels_end = element_walk.defined_element_end(head, pixel_data_at, implicit)
    except element_walk.Incomplete:
        pixels_end = None
    if pixels_end is None:
        return _parse_mapped(fd)  # encapsulated: its fragments run to the end
    if pixels_end > size:
        raise DicomRejected(CANNOT_UNDERSTAND, f"file is truncated: {element_walk.VALUE_PAST_END}")
    if pixels_end == size:
        return parsed
    tail = os.pread(fd, size - pixels_end, pixels_end)  # elements after Pixel Data, or padding
    return parsed if _walked_complete(parsed, tail, 0) else None


def _parse_mapped(fd: int) -> ParsedInstance | None:
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as view:
        return _parse_walked(view)


def parse_buffer(data: bytes) -> ParsedInstance:
    """``parse_instance`` for a Part-10 file in memory."""
    return _parse_walked(data) or parse_stream(io.BytesIO(data), len(data))


def header_in(data: bytes) -> tuple[ParsedInstance, int | None]:
    """``parse_header`` for a Part-10 file in memory: the fast walk, else pydicom."""
    return _walked_header(data) or parse_header(io.BytesIO(data), len(data))


def check_complete_in(parsed: ParsedInstance, data: bytes, pixel_data_at: int | None) -> None:
    """``check_complete`` for a Part-10 file in memory."""
    if not _walked_complete(parsed, data, pixel_data_at):
        check_complete(parsed, io.BytesIO(data), len(data), pixel_data_at)


def _parse_walked(buffer: Buffer) -> ParsedInstance | None:
    """Header and completeness by the fast walk; None where pydicom must decide (see element_walk)."""
    found = _walked_header(buffer)
    if found is None:
        return None
    parsed, pixel_data_at = found
    return parsed if _walked_complete(parsed, buffer, pixel_data_at) else None


def _walked_header(buffer: Buffer) -> tuple[ParsedInstance, int | None] | None:
    try:
        walked = element_walk.walk_part10(buffer)
    except (Unusual, Incomplete):
        return None
    ds = _dataset(walked.elements, walked.transfer_syntax_uid)
    ds.file_meta = FileMetaDataset(walked.file_meta)
    return _checked(ds, _supported(walked.transfer_syntax_uid)), walked.pixel_data_at


def _walked_complete(parsed: ParsedInstance, buffer: Buffer, pixel_data_at: int | None) -> bool:
    """True when complete; raises ``DicomRejected`` when truncated; False when pydicom must look."""
    if pixel_data_at is None:
        return True  # walked to the end already: nothing is cut off
    try:
        element_walk.dataset_end(buffer, pixel_data_at, element_walk.is_implicit(parsed.transfer_syntax_uid))
    except Incomplete as exc:
        raise DicomRejected(CANNOT_UNDERSTAND, f"file is truncated: {exc}") from exc
    except Unusual:
        return False
    return True


def _dataset(elements: element_walk.Elements, transfer_syntax_uid: str) -> Dataset:
    """Walked elements as the ``Dataset`` pydicom's reader would have built (values decoded on use)."""
    ds = Dataset(elements)
    ds.set_original_encoding(element_walk.is_implicit(transfer_syntax_uid), True)
    return ds


def parse_stream(stream: BinaryIO, size: int) -> ParsedInstance:
    """``parse_instance`` for a Part-10 file already in memory or inside a larger file."""
    parsed, pixel_data_at = parse_header(stream, size)
    check_complete(parsed, stream, size, pixel_data_at)
    return parsed


def parse_header(stream: BinaryIO, size: int) -> tuple[ParsedInstance, int | None]:
    """The checked header and where top-level Pixel Data starts (None: the parse did not stop there).

    The instance is not known to be complete yet: ``check_complete`` decides that.
    """
    ds = _read_header(stream)
    stopped_at = stream.tell()
    parsed = _checked(ds, _check_transfer_syntax(ds))
    return parsed, stopped_at if _at_pixel_data(stream, stopped_at, size) else None


def _checked(ds: Dataset, syntax: str) -> ParsedInstance:
    return ParsedInstance(
        dataset=ds,
        transfer_syntax_uid=syntax,
        sop_class_uid=_check_uid(ds, "SOPClassUID"),
        sop_instance_uid=_check_uid(ds, "SOPInstanceUID"),
        study_instance_uid=_check_uid(ds, "StudyInstanceUID"),
        series_instance_uid=_check_uid(ds, "SeriesInstanceUID"),
    )


def parse_received_prefix(
    prefix: bytes, dataset_start: int, transfer_syntax_uid: str
) -> tuple[ParsedInstance, int] | None:
    """``parse_prefix`` for an instance whose file meta this service wrote itself (DIMSE).

    Only the data set is walked (``element_walk``), from ``dataset_start`` in the negotiated transfer
    syntax: the file meta is ours. The data set has no ``file_meta``; the parsed instance carries the
    transfer syntax. Deflated, big endian and unsupported syntaxes are left to the whole instance
    (which refuses an unsupported syntax with its reason).
    """
    if (
        transfer_syntax_uid in (DEFLATED, ExplicitVRBigEndian)
        or transfer_syntax_uid not in SUPPORTED_TRANSFER_SYNTAXES
    ):
        return None
    try:
        implicit = element_walk.is_implicit(transfer_syntax_uid)
        elements, pixel_data_at = element_walk.walk_dataset(prefix, dataset_start, implicit)
        if pixel_data_at is None:
            return None
        return _checked(_dataset(elements, transfer_syntax_uid), transfer_syntax_uid), pixel_data_at
    except (Unusual, Incomplete, DicomRejected):
        return None  # truncated mid-element or malformed: the whole instance decides


def parse_prefix(prefix: bytes) -> tuple[ParsedInstance, int] | None:
    """The header from the first bytes of an instance still arriving, if they reach Pixel Data.

    Why: a receiver can parse and check the header while the pixels are still on the wire, and only
    the completeness check waits for the last byte. None when the prefix ends before top-level
    Pixel Data (a long header, or no pixels at all) or does not parse: the whole instance decides.
    """
    try:
        parsed, pixel_data_at = header_in(prefix)
    except DicomRejected:
        return None
    if pixel_data_at is None or parsed.transfer_syntax_uid == DEFLATED:
        return None  # deflated: positions in the stream say nothing about the inflated data set
    return parsed, pixel_data_at


def parse_bytes(data: bytes) -> Dataset:
    """Header of an in-memory Part-10 file (used when serving metadata)."""
    return _read_header(io.BytesIO(data))
