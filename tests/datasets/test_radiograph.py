"""Synthetic radiographs: opacities are where the mask says, and DX/CR files read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from datasets.synthetic.radiograph import generate_radiograph, generate_radiographs, write_radiograph_dicom


def test_opacity_brightens_exactly_its_mask() -> None:
    with_op = generate_radiograph(np.random.default_rng(4), size=128, has_opacity=True, noise=0.0)
    without = generate_radiograph(np.random.default_rng(4), size=128, has_opacity=False, noise=0.0)
    diff = with_op.image.astype(np.int32) - without.image.astype(np.int32)
    mask = with_op.opacity_mask.astype(bool)
    assert with_op.has_opacity
    assert mask.any()
    assert not without.has_opacity
    assert not without.opacity_mask.any()
    assert (diff >= 0).all()
    assert diff[mask].mean() > 4 * max(diff[~mask].mean(), 1e-3)


def test_batch_is_balanced_and_scaled() -> None:
    images, labels = generate_radiographs(np.random.default_rng(0), 40, size=32)
    assert images.shape == (40, 32, 32)
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert 5 < labels.sum() < 35


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_dicom_round_trip(tmp_path: Path, modality: str) -> None:
    radiograph = generate_radiograph(np.random.default_rng(1), size=64, has_opacity=True)
    path = write_radiograph_dicom(radiograph, tmp_path / "cxr.dcm", modality=modality, patient_id="X1")  # type: ignore[arg-type]
    ds = pydicom.dcmread(path)
    assert ds.Modality == modality
    assert ds.PatientID == "X1"
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert np.array_equal(ds.pixel_array, radiograph.image)
