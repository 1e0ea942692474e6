"""Findings' heatmaps as transparent, colour-mapped PNG overlays (numpy + Pillow, no web framework).

The triage stores one heatmap per finding as a compressed ``.npz`` holding a float16 ``heatmap``:

* slide findings: ``(rows, cols)`` tile scores, cell (r, c) covering level-0 pixels from
  ``c * tile_size_level0``; rendered at the slide's aspect ratio, thumbnail-sized, so the image lies
  exactly over the slide (an OpenSeadragon overlay of width 1);
* segmentation findings on a series: ``(slices, rows, columns)`` probabilities on the source grid;
  one slice is rendered at the slice's own size;
* classification findings on a series: ``(slices,)`` slice scores, which have no image to draw.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

TRANSPARENT_BELOW = 0.2
"""Scores at or below this are fully transparent; above it the opacity ramps up to 1 at score 1."""
MAX_ALPHA = 230
COLOUR_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (48, 18, 59)),
    (0.25, (40, 130, 240)),
    (0.5, (60, 220, 120)),
    (0.75, (250, 190, 40)),
    (1.0, (200, 20, 20)),
)
"""A perceptually ordered blue -> green -> yellow -> red ramp (turbo-like)."""


class HeatmapUnavailable(ValueError):
    """The stored array cannot be drawn as asked (no spatial map, slice out of range, bad file)."""


class SliceOutOfRange(HeatmapUnavailable):
    """The slice asked for is not in the heatmap."""


@dataclass(frozen=True)
class SlideGeometry:
    """Where a slide heatmap's grid lies on the slide, in level-0 pixels."""

    width: int
    height: int
    tile_size_level0: float


def load(chunks: Iterable[bytes]) -> NDArray[np.float32]:
    """The ``heatmap`` array of a stored ``.npz`` (no pickles), as float32 with NaN as 0."""
    try:
        with np.load(io.BytesIO(b"".join(chunks)), allow_pickle=False) as npz:
            array = np.asarray(npz["heatmap"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise HeatmapUnavailable(f"stored heatmap is unreadable: {exc}") from exc
    return np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)


def colourize(values: NDArray[np.float32]) -> Image.Image:
    """RGBA image of ``values`` in [0, 1]: the colour ramp, transparent where low."""
    v = np.clip(values, 0.0, 1.0)
    positions = [p for p, _ in COLOUR_STOPS]
    rgb = np.stack(
        [np.interp(v, positions, [c[channel] for _, c in COLOUR_STOPS]) for channel in range(3)], axis=-1
    )
    alpha = np.clip((v - TRANSPARENT_BELOW) / (1.0 - TRANSPARENT_BELOW), 0.0, 1.0) * MAX_ALPHA
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1).round().astype(np.uint8)
    return Image.fromarray(rgba, mode="RGBA")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def slide_png(grid: NDArray[np.float32], geometry: SlideGeometry, max_side: int) -> bytes:
    """A ``(rows, cols)`` tile grid drawn over the whole slide, ``max_side`` on its longer side.

    Each output pixel takes the score of the tile its centre falls in (nearest: tiles stay tiles).
    """
    if grid.ndim != 2 or grid.size == 0:
        raise HeatmapUnavailable(f"a slide heatmap has 2 dimensions, this one {grid.shape}")
    width, height = max(geometry.width, 1), max(geometry.height, 1)
    scale = max_side / max(width, height)
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    tile = geometry.tile_size_level0 if geometry.tile_size_level0 > 0 else width / grid.shape[1]
    cols = np.minimum(((np.arange(out_w) + 0.5) * width / out_w / tile).astype(np.int64), grid.shape[1] - 1)
    rows = np.minimum(((np.arange(out_h) + 0.5) * height / out_h / tile).astype(np.int64), grid.shape[0] - 1)
    return _png(colourize(grid[np.ix_(rows, cols)]))


def peak_slice(volume: NDArray[np.float32]) -> int:
    """The slice holding the volume's highest value."""
    return int(np.unravel_index(int(np.argmax(volume)), volume.shape)[0])


def series_png(array: NDArray[np.float32], slice_index: int | None) -> bytes:
    """One slice of a series heatmap at the slice's own size (a 2-D array is that slice)."""
    if array.ndim == 2:
        if slice_index not in (None, 0):
            raise SliceOutOfRange("this heatmap has a single slice")
        return _png(colourize(array))
    if array.ndim != 3:
        raise HeatmapUnavailable(
            "this finding has slice scores only, no image heatmap"
            if array.ndim == 1
            else f"unexpected heatmap shape {array.shape}"
        )
    index = peak_slice(array) if slice_index is None else slice_index
    if not 0 <= index < array.shape[0]:
        raise SliceOutOfRange(f"slice {index} is outside 0..{array.shape[0] - 1}")
    return _png(colourize(array[index]))


def slide_geometry(location: dict[str, Any], fallback: Sequence[int] | None) -> SlideGeometry | None:
    """The slide geometry a slide finding's location records (``dimensions``, ``tile_size_level0``)."""
    dims = location.get("dimensions") or fallback
    tile = location.get("tile_size_level0")
    if not dims or len(dims) != 2:
        return None
    try:
        size = float(tile) if tile is not None else 0.0
        return SlideGeometry(int(dims[0]), int(dims[1]), size if math.isfinite(size) else 0.0)
    except (TypeError, ValueError):
        return None
