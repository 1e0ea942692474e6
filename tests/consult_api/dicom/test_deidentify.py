"""PS3.15 Basic Profile de-identification: the action table, real files, UID consistency.

The table rows are checked one action at a time on a synthetic dataset (so each action is
seen in isolation), then whole bundled files are scanned recursively for anything left of
the original identity: that scan is what an export reviewer actually cares about.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from consult_api.dicom.deidentify import (
    BASIC_PROFILE_ACTIONS,
    BASIC_PROFILE_CODE,
    DeidentificationError,
    UidMapper,
    action_for_tag,
    deidentify,
    deidentify_file,
    resolve_action,
)
from datasets.synthetic.ct import write_ct_series
from datasets.synthetic.dicom_io import DicomSubject

SECRET = b"test-export-secret-0123456789abcdef"
PSEUDONYM = "HOI-PSEUDO-0001"
BUNDLED = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm", "rtstruct.dcm"]
TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}


def _walk(ds: Dataset) -> Iterator[DataElement]:
    """Every element, recursively through sequence items (file meta included when present)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        yield from meta
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)


def _values(elem: DataElement) -> list[str]:
    if elem.VR == "SQ" or elem.is_empty:
        return []
    value = elem.value
    items = (
        list(value) if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else [value]
    )
    return [str(v) for v in items]


def _sample_value(vr: str) -> Any:
    """A non-empty value for a VR, so each action's effect is visible."""
    samples: dict[str, Any] = {
        "DA": "20240131",
        "DT": "20240131101500",
        "TM": "101500",
        "PN": "Doe^Jane",
        "UI": "1.2.826.0.1.3680043.2.1125.1.99",
        "AS": "042Y",
        "IS": "7",
        "DS": "1.5",
        "US": 7,
        "UL": 7,
        "SS": 7,
        "SL": 7,
        "FL": 1.5,
        "FD": 1.5,
        "AT": 0x00100010,
    }
    if vr in samples:
        return samples[vr]
    if vr in {"OB", "OW", "UN", "OF", "OD", "OL", "OV"} or " or " in vr:
        return b"\x01\x02\x03\x04\x05\x06\x07\x08"
    if vr == "SQ":
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.1.77"
        item.CodeMeaning = "Saint Elsewhere"
        return Sequence([item])
    return "IDENTIFYING TEXT"


def _dataset_with(tag: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    vr = dictionary_VR(tag)
    ds.add_new(tag, vr.split(" or ")[0] if " or " in vr else vr, _sample_value(vr))
    return ds


def _deid(ds: Dataset, **kwargs: Any) -> Dataset:
    return deidentify(ds, uid_secret=SECRET, patient_pseudonym=PSEUDONYM, **kwargs)


# --- the table itself -------------------------------------------------------------------


def test_table_rows_are_known_standard_tags_with_valid_actions() -> None:
    assert len(BASIC_PROFILE_ACTIONS) > 600
    valid = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    for tag, action in BASIC_PROFILE_ACTIONS.items():
        assert action in valid, hex(tag)
        assert dictionary_has_tag(tag), f"{tag:08X} is not in the DICOM dictionary"
        if action == "U":
            assert dictionary_VR(tag) == "UI", f"U row {tag:08X} is not a UID attribute"


@pytest.mark.parametrize(
    ("action", "conformant", "minimal"),
    [
        ("D", "D", "D"),
        ("Z", "Z", "Z"),
        ("X", "X", "X"),
        ("K", "K", "K"),
        ("C", "C", "C"),
        ("U", "U", "U"),
        ("X/Z", "Z", "X"),
        ("X/D", "D", "X"),
        ("Z/D", "D", "Z"),
        ("X/Z/D", "D", "X"),
        ("X/Z/U*", "U", "X"),
    ],
)
def test_compound_actions_resolve_per_policy(action: str, conformant: str, minimal: str) -> None:
    assert resolve_action(action, "conformant") == conformant
    assert resolve_action(action, "minimal") == minimal


def test_repeating_group_and_private_rows() -> None:
    assert action_for_tag(0x50023000) == "X"  # Curve Data (50xx,xxxx)
    assert action_for_tag(0x60023000) == "X"  # Overlay Data (60xx,3000)
    assert action_for_tag(0x601E4000) == "X"  # Overlay Comments (60xx,4000)
    assert action_for_tag(0x60020010) is None  # Overlay Rows: not listed
    assert action_for_tag(0x00091001) == "X"  # private
    assert action_for_tag(0x00280010) is None  # Rows: not listed, kept


# --- each action applied to its rows -----------------------------------------------------

X_ROWS = {
    0x00101010: "PatientAge",
    0x00080081: "InstitutionAddress",
    0x00101000: "OtherPatientIDs",
    0x00081030: "StudyDescription",
    0x0008103E: "SeriesDescription",
    0x00101040: "PatientAddress",
    0x00102000: "MedicalAlerts",
    0x00081050: "PerformingPhysicianName",
    0x00204000: "ImageComments",
    0x00081120: "ReferencedPatientSequence",
    0x00880200: "IconImageSequence",
    0xFFFAFFFA: "DigitalSignaturesSequence",
}
Z_ROWS = {
    0x00080050: "AccessionNumber",
    0x00080020: "StudyDate",
    0x00080030: "StudyTime",
    0x00080090: "ReferringPhysicianName",
    0x00100030: "PatientBirthDate",
    0x00100040: "PatientSex",
    0x00200010: "StudyID",
    0x00400610: "SpecimenPreparationSequence",
}
D_ROWS = {
    0x0040A075: "VerifyingObserverName",
    0x0040A121: "Date",
    0x0040A120: "DateTime",
    0x0040A122: "Time",
    0x300A0002: "RTPlanLabel",
    0x00400551: "SpecimenIdentifier",
    0x0040A027: "VerifyingOrganization",
    0x00420011: "EncapsulatedDocument",
}
U_ROWS = {
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00200052: "FrameOfReferenceUID",
    0x00081155: "ReferencedSOPInstanceUID",
    0x00209161: "ConcatenationUID",
    0x00083010: "IrradiationEventUID",
    0x0040A124: "UID",
}


@pytest.mark.parametrize("tag", sorted(X_ROWS), ids=lambda t: X_ROWS[t])
def test_x_rows_are_removed(tag: int) -> None:
    assert BASIC_PROFILE_ACTIONS[tag] == "X"
    assert tag not in _deid(_dataset_with(tag))


@pytest.mark.parametrize("tag", sorted(Z_ROWS), ids=lambda t: Z_ROWS[t])
def test_z_rows_become_zero_length(tag: int) -> None:
    assert BASIC_PROFILE_ACTIONS[tag] == "Z"
    out = _deid(_dataset_with(tag))
    assert tag in out
    assert out[tag].is_empty


@pytest.mark.parametrize("tag", sorted(D_ROWS), ids=lambda t: D_ROWS[t])
def test_d_rows_get_a_dummy_of_their_vr(tag: int) -> None:
    assert BASIC_PROFILE_ACTIONS[tag] == "D"
    original = _dataset_with(tag)
    out = _deid(original)
    assert tag in out
    assert not out[tag].is_empty
    assert out[tag].value != original[tag].value
    assert out[tag].VR == original[tag].VR
    # Dummies must survive an encode/decode round trip with their VR (validate the value).
    buf = io.BytesIO()
    out.file_meta = FileMetaDataset()
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.save_as(buf, implicit_vr=False, little_endian=True)
    assert tag in dcmread(io.BytesIO(buf.getvalue()), force=True)


@pytest.mark.parametrize("tag", sorted(U_ROWS), ids=lambda t: U_ROWS[t])
def test_u_rows_get_the_keyed_replacement_uid(tag: int) -> None:
    assert BASIC_PROFILE_ACTIONS[tag] == "U"
    original = _dataset_with(tag)
    out = _deid(original)
    old = str(original[tag].value)
    new = str(out[tag].value)
    assert new == UidMapper(SECRET)(old)
    assert new.startswith("2.25.")
    assert len(new) <= 64
    assert new != old


def test_uid_mapper_is_consistent_per_secret_and_differs_between_secrets() -> None:
    a, b = UidMapper(SECRET), UidMapper(b"another-secret-of-enough-length!")
    uid = "1.2.3.4.5"
    assert a(uid) == a(uid) == a(uid + "\x00")
    assert a(uid) != b(uid)
    assert a(uid) != a("1.2.3.4.6")
    with pytest.raises(ValueError, match="16 bytes"):
        UidMapper(b"short")


COMPOUND_ROWS = {
    0x00080022: ("X/Z", "AcquisitionDate"),
    0x00080021: ("X/D", "SeriesDate"),
    0x00080023: ("Z/D", "ContentDate"),
    0x00080080: ("X/Z/D", "InstitutionName"),
    0x00081010: ("X/Z/D", "StationName"),
}


@pytest.mark.parametrize("tag", sorted(COMPOUND_ROWS), ids=lambda t: COMPOUND_ROWS[t][1])
def test_compound_rows_conformant_keep_the_attribute_protected(tag: int) -> None:
    action, _name = COMPOUND_ROWS[tag]
    assert BASIC_PROFILE_ACTIONS[tag] == action
    original = _dataset_with(tag)
    out = _deid(original)
    assert tag in out
    if resolve_action(action) == "Z":
        assert out[tag].is_empty
    else:
        assert not out[tag].is_empty
        assert out[tag].value != original[tag].value


@pytest.mark.parametrize("tag", sorted(COMPOUND_ROWS), ids=lambda t: COMPOUND_ROWS[t][1])
def test_compound_rows_minimal_policy_removes_where_allowed(tag: int) -> None:
    action, _name = COMPOUND_ROWS[tag]
    out = _deid(_dataset_with(tag), compound_policy="minimal")
    if action.startswith("X"):
        assert tag not in out
    else:
        assert out[tag].is_empty


def test_x_z_u_star_sequence_keeps_references_with_new_uids() -> None:
    ds = Dataset()
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = "1.2.3.4.5.6"
    ds.ReferencedImageSequence = Sequence([item])
    ds.SourceImageSequence = Sequence([copy.deepcopy(item)])
    out = _deid(ds)
    for seq in (out.ReferencedImageSequence, out.SourceImageSequence):
        assert seq[0].ReferencedSOPClassUID == CTImageStorage
        assert seq[0].ReferencedSOPInstanceUID == UidMapper(SECRET)("1.2.3.4.5.6")
    assert "ReferencedImageSequence" not in _deid(ds, compound_policy="minimal")


def test_d_on_a_sequence_cleans_free_text_but_keeps_concept_codes() -> None:
    ds = Dataset()
    concept = Dataset()
    concept.CodeValue = "121071"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Finding"
    content = Dataset()
    content.RelationshipType = "CONTAINS"
    content.ValueType = "TEXT"
    content.ConceptNameCodeSequence = Sequence([concept])
    content.TextValue = "Seen by Dr House at Princeton Plainsboro, MRN 123456"
    ds.ContentSequence = Sequence([content])
    institution = Dataset()
    institution.CodeValue = "PPTH"
    institution.CodingSchemeDesignator = "LOCAL"
    institution.CodeMeaning = "Princeton Plainsboro"
    ds.InstitutionCodeSequence = Sequence([institution])
    out = _deid(ds)
    item = out.ContentSequence[0]
    assert item.TextValue == "ANONYMIZED"
    assert item.ValueType == "TEXT"
    assert item.ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    assert out.InstitutionCodeSequence[0].CodeMeaning != "Princeton Plainsboro"


def test_k_and_c_via_overrides() -> None:
    ds = Dataset()
    ds.PatientSex = "F"
    ds.PatientAge = "042Y"
    ds.StudyDescription = "CT chest for Jane Doe"
    ds.AdditionalPatientHistory = "lives at 12 Main St"
    out = _deid(ds, overrides={"PatientSex": "K", 0x00101010: "K", "StudyDescription": "C"})
    assert out.PatientSex == "F"
    assert out.PatientAge == "042Y"
    assert out.StudyDescription == "ANONYMIZED"
    assert "AdditionalPatientHistory" not in out
    with pytest.raises(ValueError, match="unknown action"):
        _deid(ds, overrides={"PatientSex": "Q"})


def test_unlisted_dates_are_scrubbed_by_default() -> None:
    ds = Dataset()
    ds.add_new(0x00181012, "DA", "20240101")  # Date of Secondary Capture: listed (X)
    ds.add_new(0x00189074, "DT", "20240101101010")  # Frame Acquisition DateTime: listed (D)
    ds.add_new(0x00181202, "DT", "20240101101010")  # listed X
    ds.add_new(0x0018700C, "DA", "20240101")  # listed X/D
    ds.add_new(0x00209156, "US", 3)  # Frame Acquisition Number: kept
    ds.add_new(0x00080201, "SH", "+0100")  # Timezone Offset: listed X
    ds.add_new(0x0020930D, "DT", "20240101101010")  # unlisted DT (Frame Content: Frame Reference DT)
    out = _deid(ds)
    assert out[0x0020930D].value == "19000101000000"
    assert out[0x00209156].value == 3
    kept = _deid(ds, scrub_unlisted_dates=False)
    assert kept[0x0020930D].value == "20240101101010"


def test_private_tags_curves_and_overlays_removed_recursively() -> None:
    ds = Dataset()
    ds.Rows = 2
    block = ds.private_block(0x0009, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", "Jane Doe")
    nested = Dataset()
    nested.ReferencedSOPInstanceUID = "1.2.3"
    nested.private_block(0x0011, "ACME 2", create=True).add_new(0x02, "LO", "MRN 42")
    ds.ReferencedImageSequence = Sequence([nested])
    ds.add_new(0x60000010, "US", 2)  # Overlay Rows
    ds.add_new(0x60000011, "US", 2)
    ds.add_new(0x60003000, "OW", b"\x00\x00")  # Overlay Data
    ds.add_new(0x60004000, "LT", "Jane Doe")  # Overlay Comments
    ds.add_new(0x50003000, "OW", b"\x00\x00")  # Curve Data
    ds.add_new(0x00090000, "UL", 0)
    out = _deid(ds)
    assert not [e for e in _walk(out) if e.tag.is_private]
    assert not [e for e in out if e.tag.group in (0x5000, 0x6000)]
    assert out.Rows == 2


def test_burned_in_annotation_is_refused_unless_allowed() -> None:
    ds = Dataset()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidentificationError, match="Burned In"):
        _deid(ds)
    assert _deid(ds, allow_burned_in_annotation=True).PatientIdentityRemoved == "YES"


def test_marking_attributes_and_idempotent_method_code() -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    once = _deid(ds)
    twice = _deid(once)
    for out in (once, twice):
        assert out.PatientIdentityRemoved == "YES"
        assert out.PatientID == PSEUDONYM
        assert out.PatientName == PSEUDONYM
        assert out.LongitudinalTemporalInformationModified == "REMOVED"
        codes = [
            (c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning)
            for c in out.DeidentificationMethodCodeSequence
        ]
        assert codes == [BASIC_PROFILE_CODE]
        assert "Basic Profile" in str(out.DeidentificationMethod)
    assert _deid(ds, patient_name="CASE^0001").PatientName == "CASE^0001"


# --- real files ----------------------------------------------------------------------------


def _read_bundled(name: str) -> Dataset:
    return dcmread(get_testdata_file(name), force=True)


def _identity_tokens(ds: Dataset) -> tuple[set[str], set[str]]:
    """(text tokens, UIDs) of the original that must not survive de-identification."""
    text: set[str] = set()
    uids: set[str] = set()
    for elem in _walk(ds):
        if elem.tag.group == 0x0002:
            continue
        values = _values(elem)
        if elem.keyword in {
            "PatientName",
            "PatientID",
            "InstitutionName",
            "InstitutionAddress",
            "OtherPatientIDs",
        }:
            text.update(v for v in values if v.strip())
        if elem.VR in {"DA", "DT"}:
            text.update(v[:8] for v in values if len(v) >= 8)
        if BASIC_PROFILE_ACTIONS.get(int(elem.tag)) == "U":
            uids.update(values)
    # MR_small's InstitutionName is its vendor's name ("TOSHIBA"), and Manufacturer is kept by
    # the profile (not an identity attribute): such a token is not a leak.
    kept_by_design = " ".join(str(ds.get(k, "")) for k in ("Manufacturer", "ManufacturerModelName"))
    return {t for t in text if t not in kept_by_design}, uids


@pytest.mark.parametrize("name", BUNDLED)
def test_nothing_of_the_original_identity_remains(name: str) -> None:
    original = _read_bundled(name)
    text, uids = _identity_tokens(original)
    out = _deid(original)
    for elem in _walk(out):
        assert not elem.tag.is_private, elem
        for value in _values(elem):
            if elem.VR == "UI":
                assert value not in uids, f"{elem.keyword} kept an original UID"
            elif elem.VR in TEXT_VRS:
                leaked = [t for t in text if t in value]
                assert not leaked, f"{elem.tag} {elem.keyword}={value!r} contains {leaked}"


@pytest.mark.parametrize("name", BUNDLED)
def test_input_is_not_mutated(name: str) -> None:
    original = _read_bundled(name)
    before = copy.deepcopy(original)
    _deid(original)
    assert original == before
    assert original.file_meta == before.file_meta


@pytest.mark.parametrize("name", BUNDLED)
def test_output_is_a_valid_part10_file(name: str, tmp_path: Path) -> None:
    src = Path(get_testdata_file(name))
    dst = tmp_path / "out.dcm"
    original = _read_bundled(name)
    result = deidentify_file(src, dst, uid_secret=SECRET, patient_pseudonym=PSEUDONYM)
    raw = dst.read_bytes()
    assert raw[:128] == b"\x00" * 128
    assert raw[128:132] == b"DICM"
    back = dcmread(dst)  # no force: a proper Part-10 file
    assert back.SOPInstanceUID == result.SOPInstanceUID == back.file_meta.MediaStorageSOPInstanceUID
    assert back.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
    expected_ts = original.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)  # rtstruct: headerless
    assert back.file_meta.TransferSyntaxUID == expected_ts
    assert back.file_meta.ImplementationVersionName == "HOICHAN_DEID_1"
    assert "SourceApplicationEntityTitle" not in back.file_meta
    assert back.PatientIdentityRemoved == "YES"
    assert [p.name for p in tmp_path.iterdir()] == ["out.dcm"]  # no temp file left behind


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_pixel_data_unchanged(name: str, tmp_path: Path) -> None:
    original = _read_bundled(name)
    deidentify_file(
        get_testdata_file(name), tmp_path / "o.dcm", uid_secret=SECRET, patient_pseudonym=PSEUDONYM
    )
    back = dcmread(tmp_path / "o.dcm")
    assert back.PixelData == original.PixelData
    assert np.array_equal(back.pixel_array, original.pixel_array)


# --- a series and an object that references it --------------------------------------------


def _referencing_object(series: list[Dataset]) -> Dataset:
    """An SR-like instance referencing every slice (evidence + source image sequences)."""
    first = series[0]
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = first.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = first.PatientName
    ds.PatientID = first.PatientID
    sops = Sequence()
    for inst in series:
        ref = Dataset()
        ref.ReferencedSOPClassUID = inst.SOPClassUID
        ref.ReferencedSOPInstanceUID = inst.SOPInstanceUID
        sops.append(ref)
    ser = Dataset()
    ser.SeriesInstanceUID = first.SeriesInstanceUID
    ser.ReferencedSOPSequence = sops
    evidence = Dataset()
    evidence.StudyInstanceUID = first.StudyInstanceUID
    evidence.ReferencedSeriesSequence = Sequence([ser])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    ds.SourceImageSequence = Sequence(copy.deepcopy(list(sops)))
    return ds


def test_uids_stay_consistent_across_a_series_and_its_references(tmp_path: Path) -> None:
    subject = DicomSubject(patient_name="SMITH^JOHN", patient_id="MRN-778899", study_date="20240305")
    info = write_ct_series(
        [np.full((16, 16), k, np.int16) for k in range(4)],
        tmp_path / "ct",
        spacing_mm=(2.0, 1.0, 1.0),
        subject=subject,
    )
    series = [dcmread(p) for p in info.paths]
    referencing = _referencing_object(series)
    out_series = [_deid(ds) for ds in series]
    out_ref = _deid(referencing)

    new_study = {d.StudyInstanceUID for d in out_series} | {out_ref.StudyInstanceUID}
    assert len(new_study) == 1
    assert new_study != {info.study_uid}
    assert len({d.SeriesInstanceUID for d in out_series}) == 1
    assert len({d.FrameOfReferenceUID for d in out_series}) == 1
    assert out_series[0].FrameOfReferenceUID != info.frame_of_reference_uid
    new_sops = [d.SOPInstanceUID for d in out_series]
    assert len(set(new_sops)) == 4
    assert not set(new_sops) & set(info.sop_instance_uids)

    evidence = out_ref.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == out_series[0].StudyInstanceUID
    ref_series = evidence.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == out_series[0].SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in ref_series.ReferencedSOPSequence] == new_sops
    assert [r.ReferencedSOPInstanceUID for r in out_ref.SourceImageSequence] == new_sops

    # A different export secret gives unlinkable UIDs.
    other = deidentify(series[0], uid_secret=b"x" * 32, patient_pseudonym=PSEUDONYM)
    assert other.StudyInstanceUID != out_series[0].StudyInstanceUID

    # The generator fills PHI on purpose: none of it survives.
    for out in [*out_series, out_ref]:
        for elem in _walk(out):
            for value in _values(elem):
                for token in ("SMITH", "MRN-778899", "20240305", "ACC0001", "REFERRER", "District Hospital"):
                    assert token not in value, (elem.keyword, value)
