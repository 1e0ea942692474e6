"""Preprocessing against hand-computed values (training imports these same functions)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.preprocessing import (
    apply_window,
    center_crop_or_pad,
    normalize,
    preprocess_volume,
    resample,
    rescale_to_hu,
    slices_to_batch,
    tiles_to_batch,
)
from models.card import InputSpec, Normalization


def test_rescale_applies_slope_then_intercept() -> None:
    stored = np.array([0, 1024, 2048], dtype=np.int16)
    assert rescale_to_hu(stored, 1.0, -1024.0).tolist() == [-1024.0, 0.0, 1024.0]
    assert rescale_to_hu(stored, 0.5, -10.0).tolist() == [-10.0, 502.0, 1014.0]


def test_window_maps_center_width_onto_unit_interval() -> None:
    hu = np.array([-1000.0, -160.0, 40.0, 140.0, 240.0, 3000.0])
    # center 40, width 400 -> [-160, 240]
    assert apply_window(hu, 40, 400).tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]


def test_window_refuses_non_positive_width() -> None:
    with pytest.raises(ValueError, match="width"):
        apply_window(np.zeros(3), 0, 0)


def test_resample_halves_spacing_and_doubles_size() -> None:
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    out, spacing = resample(image, (2.0, 1.0), (1.0, 1.0))
    assert out.shape == (6, 4)
    assert spacing == (1.0, 1.0)
    np.testing.assert_allclose(out[:, 0], [0.0, 1.0, 3.0, 5.0, 7.0, 8.0])


def test_resample_only_touches_trailing_axes() -> None:
    volume = np.ones((5, 10, 10), dtype=np.float32)
    out, spacing = resample(volume, (0.5, 0.5), (1.0, 1.0))
    assert out.shape == (5, 5, 5)
    assert spacing == (1.0, 1.0)
    np.testing.assert_allclose(out, 1.0)


def test_crop_and_pad_keep_the_centre() -> None:
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert center_crop_or_pad(image, (2, 2)).tolist() == [[5.0, 6.0], [9.0, 10.0]]
    padded = center_crop_or_pad(np.ones((2, 2)), (4, 4), fill=-1)
    assert padded[1:3, 1:3].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert padded[0].tolist() == [-1.0] * 4


def test_normalizations() -> None:
    x = np.array([[1.0, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize(x, Normalization.ZSCORE), [[-1.0, 1.0]])
    np.testing.assert_allclose(normalize(x, Normalization.MINMAX), [[0.0, 1.0]])
    rgb = np.ones((1, 3, 2, 2), dtype=np.float32)
    out = normalize(rgb, Normalization.MEAN_STD, (0.5, 1.0, 0.0), (0.25, 1.0, 2.0), channel_axis=1)
    assert out[0, :, 0, 0].tolist() == [2.0, 0.0, 0.5]


def test_tiles_to_batch_is_nchw_and_normalized() -> None:
    spec = InputSpec(
        spatial_dims=2,
        channels=3,
        patch_size=(2, 2),
        normalization="mean_std",
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
    )
    tiles = np.full((2, 2, 2, 3), 255, dtype=np.uint8)
    out = tiles_to_batch(tiles, spec)
    assert out.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(out, 2.0)


def test_preprocess_volume_resamples_in_hu_then_windows() -> None:
    spec = InputSpec(
        spatial_dims=2, patch_size=(4, 4), spacing_mm=(1.0, 1.0), window={"center": 0, "width": 200}
    )
    volume = np.full((2, 2, 2), 100.0, dtype=np.float32)
    out, spacing = preprocess_volume(volume, (3.0, 2.0, 2.0), spec)
    assert out.shape == (2, 4, 4)
    assert spacing == (3.0, 1.0, 1.0)
    np.testing.assert_allclose(out, 1.0)


def test_slices_to_batch_replicates_channels() -> None:
    spec = InputSpec(spatial_dims=2, channels=3, patch_size=(4, 4))
    batch = slices_to_batch(np.ones((5, 8, 8), dtype=np.float32), spec)
    assert batch.shape == (5, 3, 4, 4)
