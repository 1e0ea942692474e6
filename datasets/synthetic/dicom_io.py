"""Shared DICOM plumbing for the synthetic writers: subject/study identity, UIDs, Part-10 files.

Kept apart from the generators so CT, radiograph and DICOM-WSI writers put the same patient and
study attributes in the same way (ingest and de-identification tests depend on that).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

#: Manufacturer written into every synthetic instance, so nobody mistakes one for a patient's.
MANUFACTURER = "Hoichan synthetic"


def make_uid(uid_seed: int | str | None, *parts: object) -> str:
    """A new UID; deterministic when ``uid_seed`` is given so seeded data sets are reproducible.

    Without a seed each call is unique (``generate_uid`` default), which is what ingest tests
    writing the same pixels twice need.
    """
    if uid_seed is None:
        return str(generate_uid())
    return str(generate_uid(entropy_srcs=[str(uid_seed), *(str(p) for p in parts)]))


@dataclass(frozen=True)
class DicomSubject:
    """Patient and study identity shared by every instance of one synthetic study.

    The PHI-bearing attributes (birth date, institution, referring physician) are filled on
    purpose: de-identification tests need something to remove.
    """

    patient_name: str = "SYNTHETIC^PATIENT"
    patient_id: str = "SYN0001"
    patient_birth_date: str = "19700101"
    patient_sex: str = "O"
    study_uid: str = field(default_factory=lambda: str(generate_uid()))
    study_id: str = "1"
    accession_number: str = "ACC0001"
    study_date: str = field(default_factory=lambda: dt.date.today().strftime("%Y%m%d"))
    study_time: str = "120000"
    study_description: str = "Synthetic study"
    referring_physician_name: str = "REFERRER^SYNTHETIC"
    institution_name: str = "Hoichan Synthetic District Hospital"


def base_dataset(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    subject: DicomSubject,
    modality: str,
    series_uid: str,
    series_number: int,
    series_description: str,
) -> Dataset:
    """A dataset with file meta plus the Patient, Study, Series, Equipment and SOP Common modules."""
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class_uid, sop_instance_uid)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = subject.study_date
    ds.StudyTime = subject.study_time
    ds.SeriesDate = subject.study_date
    ds.ContentDate = subject.study_date
    ds.ContentTime = subject.study_time
    ds.AccessionNumber = subject.accession_number
    ds.Modality = modality
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = subject.institution_name
    ds.ReferringPhysicianName = subject.referring_physician_name
    ds.StudyDescription = subject.study_description
    ds.SeriesDescription = series_description
    ds.PatientName = subject.patient_name
    ds.PatientID = subject.patient_id
    ds.PatientBirthDate = subject.patient_birth_date
    ds.PatientSex = subject.patient_sex
    ds.StudyInstanceUID = subject.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = subject.study_id
    ds.SeriesNumber = series_number
    return ds


def apply_extra_attributes(ds: Dataset, extra: Mapping[str, Any] | None) -> None:
    """Set caller-chosen attributes by keyword (e.g. ``{"BodyPartExamined": "HEAD"}``)."""
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)


def save_part10(ds: Dataset, path: Path) -> None:
    """Write a Part-10 file (preamble, DICM, file meta); refuses datasets without file meta."""
    ds.save_as(path, enforce_file_format=True)


def _file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta
