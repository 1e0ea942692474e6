"""Whole-slide stages: tissue mask from a thumbnail, tile grid at the model's mpp, parallel tile reads.

OpenSlide handles are thread-safe and release the GIL while decoding, so a
small pool of reader threads keeps the network fed: batch ``i + 1`` is being
read while batch ``i`` runs.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import openslide
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2hed, rgb2hsv
from skimage.filters import threshold_otsu

from inference.errors import EmptySlideError, InputSpecError, SlideError

MPP_TOLERANCE = 0.1
_CROSS = ndimage.generate_binary_structure(2, 1)


class TissueSpace(StrEnum):
    """Colour space the Otsu threshold runs in; both ignore bright, unstained glass."""

    HED = "hed"
    SATURATION = "saturation"


# Below these the brightest "tissue" is indistinguishable from glass and JPEG noise.
_SIGNAL_FLOOR = {TissueSpace.HED: 0.02, TissueSpace.SATURATION: 0.07}


@dataclass(frozen=True)
class TissueMask:
    """Boolean mask over a thumbnail plus the level-0 pixels each mask pixel stands for."""

    mask: NDArray[np.bool_]
    downsample: tuple[float, float]
    """(x, y) level-0 pixels per mask pixel."""
    threshold: float
    space: TissueSpace

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())


@dataclass(frozen=True)
class Tile:
    """One tile of the grid: grid position and its level-0 footprint origin."""

    col: int
    row: int
    x: int
    y: int
    tissue_fraction: float


@dataclass(frozen=True)
class TileGrid:
    """Where and how to read tiles so each comes out ``tile_size`` pixels at the model's mpp."""

    tile_size: int
    tile_size_level0: float
    level: int
    read_size: int
    cols: int
    rows: int
    tiles: list[Tile]


def slide_name(slide: openslide.AbstractSlide | str | Path) -> str:
    return Path(slide).name if isinstance(slide, str | Path) else type(slide).__name__


def open_slide(path: str | Path) -> openslide.OpenSlide:
    """Open with OpenSlide, turning its errors into ``SlideError`` naming the file."""
    try:
        return openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideError(Path(path).name, f"cannot be opened: {exc}") from exc


def slide_mpp(slide: openslide.AbstractSlide) -> float | None:
    """Microns per pixel at level 0 (mean of x and y), or None when the file does not say."""
    x = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    y = slide.properties.get(openslide.PROPERTY_NAME_MPP_Y)
    if not x or not y:
        return None
    return (float(x) + float(y)) / 2.0


def thumbnail_rgb(slide: openslide.AbstractSlide, max_size: int) -> NDArray[np.uint8]:
    """A small RGB overview; transparent (outside the scanned area) becomes white glass."""
    image = slide.get_thumbnail((max_size, max_size))
    return rgba_to_rgb(np.asarray(image.convert("RGBA")))


def rgba_to_rgb(rgba: NDArray[np.uint8]) -> NDArray[np.uint8]:
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def stain_signal(rgb: NDArray[np.uint8], space: TissueSpace) -> NDArray[np.float64]:
    """Per-pixel "how stained": haematoxylin + eosin optical density, or HSV saturation."""
    if space is TissueSpace.HED:
        hed = rgb2hed(rgb)
        return np.asarray(np.clip(hed[..., 0] + hed[..., 1], 0.0, None), dtype=np.float64)
    return np.asarray(rgb2hsv(rgb)[..., 1], dtype=np.float64)


def tissue_mask(
    thumbnail: NDArray[np.uint8],
    downsample: tuple[float, float],
    space: TissueSpace = TissueSpace.HED,
    slide: str = "slide",
) -> TissueMask:
    """Otsu in a stain-aware space, floored so a blank slide yields no tissue, then a light opening."""
    signal = stain_signal(thumbnail, space)
    floor = _SIGNAL_FLOOR[space]
    if float(signal.max()) < floor:
        raise EmptySlideError(
            slide, f"no stained pixels in the thumbnail ({space.value} max {signal.max():.4f})"
        )
    threshold = max(float(threshold_otsu(signal)), floor)
    mask = ndimage.binary_opening(signal > threshold, structure=_CROSS)
    if not mask.any():
        raise EmptySlideError(slide, "tissue mask is empty after thresholding")
    return TissueMask(mask=mask, downsample=downsample, threshold=threshold, space=space)


def slide_tissue_mask(
    slide: openslide.AbstractSlide,
    max_size: int = 1024,
    space: TissueSpace = TissueSpace.HED,
    name: str = "slide",
) -> TissueMask:
    thumb = thumbnail_rgb(slide, max_size)
    width, height = slide.dimensions
    downsample = (width / thumb.shape[1], height / thumb.shape[0])
    return tissue_mask(thumb, downsample, space, name)


def choose_level(level_downsamples: Sequence[float], factor: float) -> int:
    """Deepest pyramid level that still has at least the resolution needed (downsample <= factor)."""
    usable = [i for i, d in enumerate(level_downsamples) if d <= factor * (1.0 + 1e-3)]
    return max(usable, key=lambda i: level_downsamples[i]) if usable else 0


def plan_tiles(
    dimensions: tuple[int, int],
    level_downsamples: Sequence[float],
    slide_mpp_value: float,
    model_mpp: float,
    tile_size: int,
    mask: TissueMask,
    min_tissue_fraction: float,
    model: str = "model",
) -> TileGrid:
    """The grid of tiles at the model's mpp; tiles below ``min_tissue_fraction`` of tissue are skipped."""
    if model_mpp < slide_mpp_value * (1.0 - MPP_TOLERANCE):
        raise InputSpecError(model, "mpp", f">= {slide_mpp_value:.3f} (slide resolution)", model_mpp)
    factor = model_mpp / slide_mpp_value
    level0 = tile_size * factor
    level = choose_level(level_downsamples, factor)
    read_size = max(1, round(level0 / level_downsamples[level]))
    cols, rows = math.ceil(dimensions[0] / level0), math.ceil(dimensions[1] / level0)
    fractions = tissue_fractions(mask, level0, cols, rows)
    tiles = [
        Tile(col=c, row=r, x=round(c * level0), y=round(r * level0), tissue_fraction=float(fractions[r, c]))
        for r, c in zip(*np.nonzero(fractions >= max(min_tissue_fraction, 1e-9)), strict=True)
    ]
    return TileGrid(tile_size, level0, level, read_size, cols, rows, tiles)


def tissue_fractions(mask: TissueMask, tile_level0: float, cols: int, rows: int) -> NDArray[np.float64]:
    """Fraction of tissue under each tile's footprint, via an integral image (one pass for any grid)."""
    integral = np.pad(mask.mask.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    height, width = mask.mask.shape
    xs = np.clip(np.round(np.arange(cols + 1) * tile_level0 / mask.downsample[0]).astype(int), 0, width)
    ys = np.clip(np.round(np.arange(rows + 1) * tile_level0 / mask.downsample[1]).astype(int), 0, height)
    x0, x1, y0, y1 = xs[:-1], xs[1:], ys[:-1], ys[1:]
    sums = (
        integral[np.ix_(y1, x1)]
        - integral[np.ix_(y0, x1)]
        - integral[np.ix_(y1, x0)]
        + integral[np.ix_(y0, x0)]
    )
    area = np.outer(np.maximum(y1 - y0, 1), np.maximum(x1 - x0, 1))
    return np.asarray(sums / area, dtype=np.float64)


class TileReader:
    """Reads grid tiles from one OpenSlide handle, resized to the model's tile size."""

    def __init__(self, slide: openslide.AbstractSlide, grid: TileGrid) -> None:
        self.slide = slide
        self.grid = grid

    def read(self, tile: Tile) -> NDArray[np.uint8]:
        size = self.grid.read_size
        region = self.slide.read_region((tile.x, tile.y), self.grid.level, (size, size))
        if size != self.grid.tile_size:
            region = region.resize((self.grid.tile_size, self.grid.tile_size), Image.Resampling.BILINEAR)
        return rgba_to_rgb(np.asarray(region))

    def read_batch(self, tiles: Sequence[Tile]) -> NDArray[np.uint8]:
        return np.stack([self.read(t) for t in tiles])


def iter_tile_batches(
    reader: TileReader, tiles: Sequence[Tile], batch_size: int, workers: int = 4, prefetch: int = 2
) -> Iterator[tuple[list[Tile], NDArray[np.uint8]]]:
    """Yield (tiles, uint8 array) batches read by a thread pool, ``prefetch`` batches ahead."""
    chunks = [list(tiles[i : i + batch_size]) for i in range(0, len(tiles), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tile-reader") as pool:
        pending: deque[tuple[list[Tile], list[Future[NDArray[np.uint8]]]]] = deque()
        for chunk in chunks:
            pending.append((chunk, [pool.submit(reader.read, t) for t in chunk]))
            if len(pending) > prefetch:
                yield _collect(pending.popleft())
        while pending:
            yield _collect(pending.popleft())


def _collect(
    item: tuple[list[Tile], list[Future[NDArray[np.uint8]]]],
) -> tuple[list[Tile], NDArray[np.uint8]]:
    chunk, futures = item
    return chunk, np.stack([f.result() for f in futures])
