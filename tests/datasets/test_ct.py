"""Synthetic CT: determinism, honest lesion masks, DICOM series that read back in order."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom

from datasets.loaders.dicom_folder import scan_dicom_folder
from datasets.synthetic.ct import CTCase, generate_ct_case, make_ct_phantom, write_ct_series
from tests.datasets.conftest import WrittenCT


def test_same_seed_same_volume() -> None:
    a = generate_ct_case(np.random.default_rng(5), shape=(8, 32, 32))
    b = generate_ct_case(np.random.default_rng(5), shape=(8, 32, 32))
    assert np.array_equal(a.volume_hu, b.volume_hu)
    assert np.array_equal(a.lesion_mask, b.lesion_mask)


def test_volume_has_anatomy_in_hu(ct_case: CTCase) -> None:
    v = ct_case.volume_hu
    assert v.dtype == np.int16
    assert (v < -900).mean() > 0.1  # air and lungs
    assert (v > 500).any()  # bone
    assert ((v > -150) & (v < 100)).mean() > 0.2  # fat and soft tissue


def test_lesion_mask_is_exactly_where_lesion_hu_was_painted(ct_case: CTCase) -> None:
    phantom = ct_case.phantom
    assert ct_case.has_lesion
    for k in range(phantom.shape[0]):
        with_lesion = phantom.render_slice(k, noise=False).astype(np.int32)
        without = phantom.render_slice(k, lesions=False, noise=False).astype(np.int32)
        mask = phantom.lesion_mask_slice(k).astype(bool)
        changed = with_lesion != without
        assert not (changed & ~mask).any(), f"slice {k}: HU changed outside the mask"
        assert changed[mask].mean() > 0.95 if mask.any() else True


def test_mask_mean_matches_lesion_hu_and_volume() -> None:
    rng = np.random.default_rng(11)
    case = generate_ct_case(rng, shape=(48, 96, 96), n_lesions=1, lesion_radius_mm=(12.0, 15.0))
    (lesion,) = case.lesions
    inside = case.volume_hu[case.lesion_mask.astype(bool)].astype(float)
    assert abs(inside.mean() - lesion.hu) < 5.0
    voxel_mm3 = float(np.prod(case.spacing_mm))
    assert abs(case.lesion_mask.sum() * voxel_mm3 / lesion.volume_mm3 - 1.0) < 0.25


def test_lesion_free_case_has_empty_mask() -> None:
    case = generate_ct_case(np.random.default_rng(3), shape=(8, 32, 32), n_lesions=0)
    assert not case.has_lesion
    assert case.labels() == {"has_lesion": False, "n_lesions": 0, "lesions": []}


def test_slices_stream_without_building_the_volume() -> None:
    phantom = make_ct_phantom(np.random.default_rng(1), shape=(4, 512, 512), n_lesions=1)
    slices = list(phantom.iter_slices())
    assert len(slices) == 4
    assert slices[0].shape == (512, 512)


def test_series_reads_back_with_pydicom(written_ct: WrittenCT) -> None:
    files = sorted(written_ct.folder.glob("*.dcm"))
    assert len(files) == written_ct.case.volume_hu.shape[0]
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert str(ds.PatientName) == "DOE^JANE"
    assert ds.PatientID == "P-0042"
    assert ds.pixel_array.dtype == np.int16
    assert float(ds.RescaleIntercept) == -1024.0
    assert np.allclose([float(v) for v in ds.PixelSpacing], written_ct.case.spacing_mm[1:], rtol=1e-5)
    assert np.isclose(float(ds.SliceThickness), written_ct.case.spacing_mm[0], rtol=1e-5)
    uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert len(uids) == len(files)


def test_shuffled_series_sorts_back_to_generator_order(written_ct: WrittenCT) -> None:
    refs = scan_dicom_folder(written_ct.folder)[written_ct.series.series_uid]
    shuffled = list(refs)
    random.Random(0).shuffle(shuffled)
    ordered = sorted(shuffled, key=lambda r: r.sort_key)
    volume = np.stack([_hu(pydicom.dcmread(r.path)) for r in ordered])
    assert np.array_equal(volume, written_ct.case.volume_hu)


def test_uid_seed_makes_uids_reproducible(tmp_path: Path, ct_case: CTCase) -> None:
    base = tmp_path
    a = write_ct_series(ct_case.volume_hu[:2], base / "a", spacing_mm=ct_case.spacing_mm, uid_seed="s")
    b = write_ct_series(ct_case.volume_hu[:2], base / "b", spacing_mm=ct_case.spacing_mm, uid_seed="s")
    c = write_ct_series(ct_case.volume_hu[:2], base / "c", spacing_mm=ct_case.spacing_mm)
    assert a.sop_instance_uids == b.sop_instance_uids
    assert not set(a.sop_instance_uids) & set(c.sop_instance_uids)


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return (ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)).astype(
        np.int16
    )
