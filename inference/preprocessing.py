"""Intensity and geometry preprocessing, written once for serving and training.

Training imports these same functions so that what a model saw when it learnt
is exactly what it sees in production (no train/serve skew). They are pure
numpy functions on arrays with explicit spacing; the card's ``InputSpec``
decides which ones run and with which parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from models.card import InputSpec, Normalization

FloatArray = NDArray[np.float32]
_EPS = 1e-6


def rescale_to_hu(pixels: NDArray[np.generic], slope: float, intercept: float) -> FloatArray:
    """Stored values -> modality units (HU for CT): ``value * RescaleSlope + RescaleIntercept``."""
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def apply_window(values: NDArray[np.generic], center: float, width: float) -> FloatArray:
    """Clip to ``[center - width/2, center + width/2]`` and map linearly onto [0, 1].

    This is a linear window on the modality values; it is what a radiologist's
    window shows, and it removes the long HU tails that destabilise networks.
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = center - width / 2.0
    out = (values.astype(np.float32) - np.float32(low)) / np.float32(width)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def zoom_factors(spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple[float, ...]:
    """Per-axis scale from current to target spacing (2 mm -> 1 mm doubles the size)."""
    if len(spacing) != len(target_spacing):
        raise ValueError(f"spacing {tuple(spacing)} and target {tuple(target_spacing)} differ in rank")
    return tuple(float(s) / float(t) for s, t in zip(spacing, target_spacing, strict=True))


def resample(
    array: NDArray[np.generic],
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    order: int = 1,
) -> tuple[FloatArray, tuple[float, ...]]:
    """Resample the trailing ``len(spacing)`` axes to ``target_spacing``; return array and actual spacing.

    The returned spacing is recomputed from the rounded output size, so
    geometry stays exact when findings are mapped back to the source grid.
    """
    factors = zoom_factors(spacing, target_spacing)
    lead = array.ndim - len(factors)
    full = (1.0,) * lead + factors
    if all(abs(f - 1.0) < 1e-6 for f in factors):
        return array.astype(np.float32), tuple(float(s) for s in spacing)
    out = ndimage.zoom(array.astype(np.float32), full, order=order, mode="nearest", grid_mode=True)
    actual = tuple(float(s) * array.shape[lead + i] / out.shape[lead + i] for i, s in enumerate(spacing))
    return out.astype(np.float32), actual


def resize(array: NDArray[np.generic], shape: Sequence[int], order: int = 1) -> FloatArray:
    """Resize the trailing axes to ``shape`` exactly (used when a card fixes size, not spacing)."""
    lead = array.ndim - len(shape)
    factors = (1.0,) * lead + tuple(n / s for n, s in zip(shape, array.shape[lead:], strict=True))
    out = ndimage.zoom(array.astype(np.float32), factors, order=order, mode="nearest", grid_mode=True)
    return out.astype(np.float32)


def center_crop_or_pad(array: NDArray[np.generic], shape: Sequence[int], fill: float = 0.0) -> FloatArray:
    """Crop or pad the trailing axes symmetrically to ``shape``, keeping the image centre fixed."""
    out = array.astype(np.float32)
    lead = out.ndim - len(shape)
    for axis, size in enumerate(shape, start=lead):
        out = _fit_axis(out, axis, size, fill)
    return out


def _fit_axis(array: FloatArray, axis: int, size: int, fill: float) -> FloatArray:
    current = array.shape[axis]
    if current > size:
        start = (current - size) // 2
        return np.take(array, np.arange(start, start + size), axis=axis)
    if current < size:
        before = (size - current) // 2
        pad = [(0, 0)] * array.ndim
        pad[axis] = (before, size - current - before)
        return np.pad(array, pad, mode="constant", constant_values=fill)
    return array


def normalize(
    array: NDArray[np.generic],
    mode: Normalization,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channel_axis: int = 0,
) -> FloatArray:
    """Scale intensities as training did: none, per-image z-score, per-image min-max, or fixed mean/std."""
    x = array.astype(np.float32)
    if mode is Normalization.NONE:
        return x
    if mode is Normalization.ZSCORE:
        return ((x - x.mean()) / max(float(x.std()), _EPS)).astype(np.float32)
    if mode is Normalization.MINMAX:
        low, high = float(x.min()), float(x.max())
        return ((x - low) / max(high - low, _EPS)).astype(np.float32)
    return _mean_std(x, mean, std, channel_axis)


def _mean_std(
    x: FloatArray, mean: Sequence[float] | None, std: Sequence[float] | None, axis: int
) -> FloatArray:
    if mean is None or std is None:
        raise ValueError("mean_std normalization needs mean and std")
    shape = [1] * x.ndim
    shape[axis] = len(mean)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    return ((x - m) / s).astype(np.float32)


def preprocess_volume(
    volume: NDArray[np.generic], spacing: Sequence[float], spec: InputSpec
) -> tuple[FloatArray, tuple[float, ...]]:
    """Volume in modality units (z, y, x) -> model intensities on the card's grid.

    Order matters: resample in HU (interpolating physical values), then window,
    then normalize. For 2D cards ``spacing_mm`` is in-plane (row, column) and
    the slice axis is left alone.
    """
    out, out_spacing = volume.astype(np.float32), tuple(float(s) for s in spacing)
    if spec.spacing_mm is not None:
        plane = out_spacing[-spec.spatial_dims :]
        out, new_plane = resample(out, plane, spec.spacing_mm)
        out_spacing = out_spacing[: len(out_spacing) - spec.spatial_dims] + new_plane
    if spec.window is not None:
        out = apply_window(out, spec.window.center, spec.window.width)
    out = normalize(out, spec.normalization, spec.mean, spec.std)
    return out, out_spacing


def slices_to_batch(volume: FloatArray, spec: InputSpec) -> FloatArray:
    """(z, y, x) -> (z, C, H, W) at the card's patch size for a 2D network.

    With a spacing in the card the slice is already on the right grid, so it is
    cropped/padded (keeps physical size); without one it is resized (the model
    was trained on whole resized images).
    """
    size = spec.patch_size
    fitted = center_crop_or_pad(volume, size) if spec.spacing_mm is not None else resize(volume, size)
    return np.repeat(fitted[:, None], spec.channels, axis=1).astype(np.float32)


def tiles_to_batch(tiles: NDArray[np.uint8], spec: InputSpec) -> FloatArray:
    """RGB tiles (N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1], normalized per the card."""
    x = np.ascontiguousarray(tiles.transpose(0, 3, 1, 2), dtype=np.float32)
    x *= np.float32(1.0 / 255.0)
    return normalize(x, spec.normalization, spec.mean, spec.std, channel_axis=1)
