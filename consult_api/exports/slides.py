"""Re-write a slide as a plain pyramidal TIFF: only the pyramid leaves, never label or macro images.

Vendor files keep the label and macro (which show names and barcodes) inside the same file, so a
training export cannot copy the file; it reads the pyramid through OpenSlide and writes a new
Aperio-like TIFF that carries the resolution and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openslide
import tifffile
from numpy.typing import NDArray

TILE = 256
MIN_LEVEL_SIDE = 512


def _tiles(slide: openslide.OpenSlide, level: int, downsample: float) -> Iterator[NDArray[np.uint8]]:
    width, height = slide.level_dimensions[level]
    for y in range(0, height, TILE):
        for x in range(0, width, TILE):
            origin = (int(x * downsample), int(y * downsample))
            region = slide.read_region(origin, level, (TILE, TILE)).convert("RGB")
            yield np.asarray(region, dtype=np.uint8)


def _description(slide: openslide.OpenSlide, width: int, height: int) -> str:
    mpp = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    power = slide.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
    parts = [
        f"Aperio Image Library Hoichan export\r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) JPEG"
    ]
    if power:
        parts.append(f"AppMag = {power}")
    if mpp:
        parts.append(f"MPP = {mpp}")
    return "|".join(parts)


def write_label_free_copy(source: Path, target: Path, quality: int = 90) -> Path:
    """Write ``source``'s pyramid levels (down to 512 px) to ``target`` as a tiled JPEG TIFF."""
    slide = openslide.OpenSlide(str(source))
    try:
        levels = [
            lvl
            for lvl, (w, h) in enumerate(slide.level_dimensions)
            if lvl == 0 or max(w, h) >= MIN_LEVEL_SIDE
        ]
        with tifffile.TiffWriter(target, bigtiff=True) as tif:
            for index, level in enumerate(levels):
                width, height = slide.level_dimensions[level]
                tif.write(
                    _tiles(slide, level, slide.level_downsamples[level]),
                    shape=(height, width, 3),
                    dtype=np.uint8,
                    tile=(TILE, TILE),
                    compression="jpeg",
                    compressionargs={"level": quality},
                    photometric="rgb",
                    subfiletype=0 if index == 0 else 1,
                    description=_description(slide, width, height) if index == 0 else None,
                    metadata=None,
                )
    finally:
        slide.close()
    return target
