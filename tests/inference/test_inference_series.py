"""DICOM series -> volume: sorting, spacing, HU, and refusal of broken series."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from inference.dicom_series import load_series
from inference.errors import SeriesError


def test_slices_sorted_by_position_not_instance_number(ct_datasets: list[Dataset]) -> None:
    volume = load_series(ct_datasets)
    z = [float(ds.ImagePositionPatient[2]) for ds in volume.datasets]
    assert z == sorted(z)
    assert volume.sop_instance_uids == tuple(str(ds.SOPInstanceUID) for ds in volume.datasets)
    assert volume.shape == (8, 32, 32)
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.8))
    assert volume.origin == (0.0, 0.0, -50.0)
    np.testing.assert_allclose(volume.direction, np.eye(3))


def test_pixels_are_hounsfield_units(ct_datasets: list[Dataset]) -> None:
    volume = load_series(ct_datasets)
    assert volume.pixels[0, 0, 0] == pytest.approx(40.0)
    assert volume.pixels[5, 12, 20] == pytest.approx(1000.0)
    assert volume.pixels.max() == pytest.approx(1000.0)


def test_paths_and_datasets_give_the_same_volume(ct_datasets: list[Dataset], ct_paths: list[Path]) -> None:
    a, b = load_series(ct_datasets), load_series(ct_paths)
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert a.sop_instance_uids == b.sop_instance_uids


def test_real_single_slice_ct() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    volume = load_series([path])
    ds = dcmread(path)
    assert volume.shape == (1, 128, 128)
    assert volume.modality == "CT"
    assert volume.spacing[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])
    expected = ds.pixel_array[0, 0] * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert volume.pixels[0, 0, 0] == pytest.approx(expected)


def test_two_series_are_refused(make_series: Callable[..., list[Dataset]]) -> None:
    mixed = make_series(slices=2) + make_series(slices=2)
    with pytest.raises(SeriesError, match="2 series"):
        load_series(mixed)


def test_duplicate_positions_are_refused(make_series: Callable[..., list[Dataset]]) -> None:
    series = make_series(slices=3)
    series[2].ImagePositionPatient = list(series[1].ImagePositionPatient)
    with pytest.raises(SeriesError, match="same position") as info:
        load_series(series)
    assert info.value.series_instance_uid == str(series[0].SeriesInstanceUID)


def test_missing_slice_is_refused(make_series: Callable[..., list[Dataset]]) -> None:
    series = make_series(slices=5)
    with pytest.raises(SeriesError, match="non-uniform"):
        load_series(series[:2] + series[3:])


def test_empty_input_is_refused() -> None:
    with pytest.raises(SeriesError, match="no instances"):
        load_series([])
