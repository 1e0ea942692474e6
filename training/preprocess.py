"""Raw pixels -> network inputs, by calling the serving preprocessing in ``inference.preprocessing``.

These adapters only reshape; every intensity and geometry operation is the one
the DICOM and WSI pipelines run, with the card's ``InputSpec``. A radiograph is
treated as a one-slice series and a CT volume as the 3D pipeline treats it, so
a model sees at training time exactly what it will see in production.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from inference.preprocessing import preprocess_volume, resample, slices_to_batch, tiles_to_batch
from models.card import InputSpec

FloatArray = NDArray[np.float32]


def image_to_input(pixels: NDArray[np.generic], spacing: Sequence[float], spec: InputSpec) -> FloatArray:
    """A 2D image in modality units (H, W) with (row, col) spacing -> (C, *patch) like one DX slice."""
    volume = np.asarray(pixels, dtype=np.float32)[None]
    model_input, _ = preprocess_volume(volume, (1.0, *spacing), spec)
    return slices_to_batch(model_input, spec)[0]


def volume_to_input(
    volume: NDArray[np.generic], spacing: Sequence[float], spec: InputSpec
) -> tuple[FloatArray, tuple[float, ...]]:
    """A volume in HU (z, y, x) -> (C, z', y', x') on the card's grid, and that grid's spacing."""
    model_input, out_spacing = preprocess_volume(np.asarray(volume, dtype=np.float32), spacing, spec)
    return np.repeat(model_input[None], spec.channels, axis=0), out_spacing


def mask_to_grid(mask: NDArray[np.generic], spacing: Sequence[float], spec: InputSpec) -> NDArray[np.uint8]:
    """A label mask resampled (nearest neighbour) onto the same grid as ``volume_to_input``."""
    if spec.spacing_mm is None:
        return np.asarray(mask, dtype=np.uint8)
    plane = tuple(spacing)[-spec.spatial_dims :]
    out, _ = resample(np.asarray(mask, dtype=np.float32), plane, spec.spacing_mm, order=0)
    return (out > 0.5).astype(np.uint8)


def tiles_to_input(tiles: NDArray[np.uint8], spec: InputSpec) -> FloatArray:
    """RGB tiles (N, H, W, 3) uint8 -> (N, 3, H, W) exactly as the WSI pipeline batches them."""
    return tiles_to_batch(np.asarray(tiles, dtype=np.uint8), spec)
