"""Sliding-window inference in numpy with overlap and Gaussian blending (2D or 3D).

Same algorithm as MONAI's ``SlidingWindowInferer`` (overlapping windows,
Gaussian importance so window borders count less), but in numpy so it runs
with any ``numpy -> numpy`` network, an ONNX session included. Windows are
batched: one ORT call on eight windows is cheaper than eight calls.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

Network = Callable[[NDArray[np.float32]], NDArray[np.float32]]


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start offsets along one axis; the last window is flush with the end so every voxel is covered."""
    if size <= roi:
        return [0]
    stride = max(1, round(roi * (1.0 - overlap)))
    starts = list(range(0, size - roi + 1, stride))
    if starts[-1] != size - roi:
        starts.append(size - roi)
    return starts


def gaussian_importance(roi: Sequence[int], sigma_scale: float = 0.125) -> NDArray[np.float32]:
    """Separable Gaussian peaking at the window centre; floored so no voxel gets zero weight."""
    axes = [_gaussian_1d(n, max(n * sigma_scale, 1e-3)) for n in roi]
    weights = axes[0]
    for axis in axes[1:]:
        weights = np.multiply.outer(weights, axis)
    weights = (weights / weights.max()).astype(np.float32)
    floor = weights[weights > 0].min()
    return np.maximum(weights, floor).astype(np.float32)


def _gaussian_1d(n: int, sigma: float) -> NDArray[np.float64]:
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    return np.exp(-0.5 * (x / sigma) ** 2)


def window_slices(spatial: Sequence[int], roi: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    starts = [window_starts(s, r, overlap) for s, r in zip(spatial, roi, strict=True)]
    return [
        tuple(slice(b, b + r) for b, r in zip(corner, roi, strict=True))
        for corner in itertools.product(*starts)
    ]


def _pad_to_roi(image: NDArray[np.float32], roi: Sequence[int], value: float) -> NDArray[np.float32]:
    pad = [(0, 0)] + [(0, max(0, r - s)) for s, r in zip(image.shape[1:], roi, strict=True)]
    if all(after == 0 for _, after in pad):
        return image
    return np.pad(image, pad, mode="constant", constant_values=value)


def _batches(items: list[tuple[slice, ...]], size: int) -> Iterator[list[tuple[slice, ...]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sliding_window_inference(
    image: NDArray[np.float32],
    roi_size: Sequence[int],
    network: Network,
    overlap: float = 0.25,
    batch_size: int = 4,
    sigma_scale: float = 0.125,
    pad_value: float = 0.0,
) -> NDArray[np.float32]:
    """(C, *spatial) -> (K, *spatial): run ``network`` on (B, C, *roi) windows and blend the outputs.

    The image is padded at the end of each axis to at least the window size and
    the output cropped back, so small volumes work too.
    """
    spatial = image.shape[1:]
    padded = _pad_to_roi(image.astype(np.float32), roi_size, pad_value)
    weights = gaussian_importance(roi_size, sigma_scale)
    windows = window_slices(padded.shape[1:], roi_size, overlap)
    output: NDArray[np.float32] | None = None
    norm = np.zeros(padded.shape[1:], dtype=np.float32)
    for group in _batches(windows, batch_size):
        batch = np.stack([padded[(slice(None), *w)] for w in group])
        pred = np.asarray(network(batch), dtype=np.float32)
        if pred.shape[0] != len(group) or pred.shape[2:] != tuple(roi_size):
            raise ValueError(
                f"network returned {pred.shape} for windows {batch.shape}; expected (B, K, *roi)"
            )
        if output is None:
            output = np.zeros((pred.shape[1], *padded.shape[1:]), dtype=np.float32)
        for window, window_pred in zip(group, pred, strict=True):
            output[(slice(None), *window)] += window_pred * weights
            norm[window] += weights
    assert output is not None
    output /= norm
    return output[(slice(None), *(slice(0, s) for s in spatial))]
