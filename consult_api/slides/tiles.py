"""DeepZoom tiles, thumbnails, regions and associated images from open slides, with caches.

Why it is fast: (1) open slides are kept in an LRU, so a pan never re-parses a file; (2) encoded
tiles are kept in a byte-bounded LRU, so a warm tile is a dictionary lookup; (3) the DeepZoom tile
size is the slide's own tile size with no overlap, so wherever a DeepZoom level coincides with a
stored pyramid level the stored JPEG tile is served as is, without decoding or re-encoding. That
pass-through is enabled per level only after one tile's bytes, decoded, match OpenSlide's own read.
Everything else goes through OpenSlide's ``DeepZoomGenerator`` (the reference), then JPEG.

No web framework here: the router calls these functions from the threadpool.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openslide
import tifffile
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from consult_api.slides.cache import Lru
from consult_api.slides.errors import TileOutOfRange

JPEG_QUALITY = 85
DEFAULT_TILE = 256
MIN_TILE, MAX_TILE = 128, 1024
MAX_REGION_SIDE = 4096
TIFF_JPEG = 7
_PASSTHROUGH_TOLERANCE = 2


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """RGB JPEG bytes; transparent pixels (outside the scanned area) become white."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    elif image.mode != "RGB":
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


@dataclass(frozen=True)
class RawLevel:
    """Byte ranges of one stored TIFF level's JPEG tiles, readable without decoding."""

    fd: int
    offsets: np.ndarray
    counts: np.ndarray
    tables: bytes | None
    tiles_across: int

    def read(self, col: int, row: int) -> bytes:
        index = row * self.tiles_across + col
        data = os.pread(self.fd, int(self.counts[index]), int(self.offsets[index]))
        if self.tables:
            return self.tables[:-2] + data[2:]
        return data


def choose_tile_size(slide: openslide.OpenSlide) -> int:
    """The slide's own square tile size (so stored tiles line up), else 256."""
    width = slide.properties.get("openslide.level[0].tile-width")
    height = slide.properties.get("openslide.level[0].tile-height")
    if width and width == height and MIN_TILE <= int(width) <= MAX_TILE:
        return int(width)
    return DEFAULT_TILE


def _tiff_pages(path: Path, tile: int) -> dict[tuple[int, int], tifffile.TiffPage]:
    """Tiled JPEG RGB pages with square ``tile`` tiles, by (width, height)."""
    pages: dict[tuple[int, int], tifffile.TiffPage] = {}
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                if not isinstance(page, tifffile.TiffPage) or not page.is_tiled:
                    continue
                if page.compression != TIFF_JPEG or page.tilewidth != tile or page.tilelength != tile:
                    continue
                if page.samplesperpixel != 3 or page.planarconfig != 1:
                    continue
                pages.setdefault((page.imagewidth, page.imagelength), page)
    except (tifffile.TiffFileError, OSError, ValueError):
        return {}
    return pages


def _matches_openslide(raw: RawLevel, slide: openslide.OpenSlide, level: int, tile: int) -> bool:
    """Decode stored tile (0, 0) and compare with OpenSlide's read of the same pixels."""
    try:
        ours = np.asarray(Image.open(io.BytesIO(raw.read(0, 0))).convert("RGB"), dtype=np.int16)
    except (OSError, ValueError):
        return False
    theirs = np.asarray(slide.read_region((0, 0), level, (tile, tile)).convert("RGB"), dtype=np.int16)
    if ours.shape != theirs.shape:
        return False
    return int(np.abs(ours - theirs).max()) <= _PASSTHROUGH_TOLERANCE


def _raw_levels(
    path: Path, fd: int, slide: openslide.OpenSlide, dz: DeepZoomGenerator, tile: int
) -> dict[int, RawLevel]:
    """DeepZoom levels whose tiles are exactly stored tiles, mapped to their byte ranges."""
    pages = _tiff_pages(path, tile)
    found: dict[int, RawLevel] = {}
    for dz_level in range(dz.level_count):
        downsample = 2 ** (dz.level_count - 1 - dz_level)
        level = slide.get_best_level_for_downsample(downsample)
        dims = slide.level_dimensions[level]
        page = pages.get(dims)
        if page is None or slide.level_downsamples[level] != downsample:
            continue
        if dims != dz.level_dimensions[dz_level] or min(dims) < tile:
            continue
        raw = RawLevel(
            fd=fd,
            offsets=np.asarray(page.dataoffsets, dtype=np.int64),
            counts=np.asarray(page.databytecounts, dtype=np.int64),
            tables=bytes(page.jpegtables) if page.jpegtables else None,
            tiles_across=-(-dims[0] // tile),
        )
        if _matches_openslide(raw, slide, level, tile):
            found[dz_level] = raw
    return found


@dataclass
class OpenedSlide:
    """One open slide: the OpenSlide handle, its DeepZoom view and the pass-through levels."""

    key: str
    slide: openslide.OpenSlide
    dz: DeepZoomGenerator
    tile: int
    raw: dict[int, RawLevel] = field(default_factory=dict)
    fd: int | None = None

    @classmethod
    def open(cls, key: str, path: Path) -> OpenedSlide:
        slide = openslide.OpenSlide(str(path))
        tile = choose_tile_size(slide)
        dz = DeepZoomGenerator(slide, tile_size=tile, overlap=0, limit_bounds=False)
        fd = os.open(path, os.O_RDONLY)
        opened = cls(key, slide, dz, tile, fd=fd)
        opened.raw = _raw_levels(path, fd, slide, dz, tile)
        if not opened.raw:
            os.close(fd)
            opened.fd = None
        return opened

    def __del__(self) -> None:
        """Evicted from the LRU and no request holds it any more: release the file."""
        if self.fd is not None:
            os.close(self.fd)

    def check_tile(self, level: int, col: int, row: int) -> None:
        if not 0 <= level < self.dz.level_count:
            raise TileOutOfRange(f"level {level} does not exist; levels are 0..{self.dz.level_count - 1}")
        cols, rows = self.dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileOutOfRange(f"tile {col}_{row} is outside level {level}, which has {cols}x{rows} tiles")

    def render_tile(self, level: int, col: int, row: int) -> bytes:
        self.check_tile(level, col, row)
        raw = self.raw.get(level)
        width, height = self.dz.level_dimensions[level]
        if raw is not None and (col + 1) * self.tile <= width and (row + 1) * self.tile <= height:
            return raw.read(col, row)
        return encode_jpeg(self.dz.get_tile(level, (col, row)))

    def thumbnail(self, max_side: int) -> bytes:
        return encode_jpeg(self.slide.get_thumbnail((max_side, max_side)))

    def region(self, x: int, y: int, level: int, width: int, height: int) -> bytes:
        if not 0 <= level < self.slide.level_count:
            raise TileOutOfRange(f"level {level} does not exist; levels are 0..{self.slide.level_count - 1}")
        full_w, full_h = self.slide.dimensions
        if not (0 <= x < full_w and 0 <= y < full_h):
            raise TileOutOfRange(f"({x}, {y}) is outside the slide ({full_w}x{full_h})")
        return encode_jpeg(self.slide.read_region((x, y), level, (width, height)))

    def associated(self, name: str) -> bytes | None:
        image = self.slide.associated_images.get(name)
        return None if image is None else encode_jpeg(image)


TileKey = tuple[str, int, int, int]


class TileEngine:
    """Process-wide: an LRU of open slides and a byte-bounded LRU of encoded tiles."""

    def __init__(self, max_open_slides: int = 32, tile_cache_bytes: int = 256 * 1024 * 1024) -> None:
        self.slides: Lru[str, OpenedSlide] = Lru(max_open_slides)
        self.tiles: Lru[TileKey, bytes] = Lru(tile_cache_bytes, weigh=len)
        self._open_lock = threading.Lock()

    def opened(self, key: str, path: Path) -> OpenedSlide:
        """The open slide for ``key`` (its content hash), opening ``path`` on first use."""
        slide = self.slides.get(key)
        if slide is not None:
            return slide
        with self._open_lock:
            slide = self.slides.get(key)
            if slide is None:
                slide = OpenedSlide.open(key, path)
                self.slides.put(key, slide)
        return slide

    def cached_tile(self, key: str, level: int, col: int, row: int) -> bytes | None:
        return self.tiles.get((key, level, col, row))

    def tile(self, key: str, path: Path, level: int, col: int, row: int) -> bytes:
        """Encoded tile bytes; blocking (file reads, decoding), so call it from a worker thread."""
        cached = self.tiles.get((key, level, col, row))
        if cached is not None:
            return cached
        data = self.opened(key, path).render_tile(level, col, row)
        self.tiles.put((key, level, col, row), data)
        return data
