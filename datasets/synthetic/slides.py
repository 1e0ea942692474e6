"""Whole synthetic slides: Aperio-like pyramidal TIFF + GeoJSON tumour annotations.

Why strips: a 20k x 20k RGB slide is 1.2 GB raw, so level 0 is rendered one tile row at a time
and handed to tifffile as a tile iterator; while it streams, each strip is block-averaged into
level 1 (a disk-backed memmap), and lower levels come from level 1. Nothing full-resolution is
ever held at once.

Ground truth is one set of polygons: tissue pieces (star-shaped blobs) and tumour regions inside
them. The pixels are rendered from a rasterisation of those polygons and the GeoJSON is written
from the same vertices, so an annotation always lands on tumour tissue. Tissue is drawn with the
nucleus sampler and stain model of ``he_tiles`` (tumour: dense atypical nuclei; elsewhere normal
stroma), so tiles cut from a slide look like the tiles a classifier trains on.

The file layout follows FIELD-NOTES: ``TiffWriter(bigtiff=True)``, one ``write`` per level with
``metadata=None`` (otherwise tifffile adds a second ImageDescription and OpenSlide falls back to
generic-tiff), Aperio ImageDescription on IFD0 so OpenSlide reports vendor ``aperio``, mpp and
objective power. Optional label and macro images carry the patient name, because de-identified
exports must prove they drop them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from datasets.synthetic.he_tiles import (
    NORMAL_STYLE,
    TUMOUR_STYLE,
    Nuclei,
    StainMatrix,
    compose_he,
    paint_nuclei,
    sample_nuclei,
)

#: Class map values used in rasterised ground truth.
BACKGROUND, TISSUE, TUMOUR = 0, 1, 2
#: QuPath's built-in class name; ``loaders.slide_tiles`` maps it to the label "tumour".
TUMOUR_CLASS_NAME = "Tumor"
TUMOUR_COLOR = [200, 0, 0]
LEVEL_DOWNSAMPLE = 4
GLASS_BRIGHTNESS = 242.0
_MASK_DOWNSAMPLE = 4
_COARSE = 32
_TEXTURE = 512


@dataclass(frozen=True)
class SlidePolygon:
    """A closed polygon in level-0 pixel coordinates, vertices as (x, y) rows, not repeated."""

    vertices: np.ndarray  # (n, 2) float (x, y)
    classification: str

    def geojson_feature(self, index: int) -> dict[str, Any]:
        """QuPath-style GeoJSON feature (closed ring, classification name and colour)."""
        ring = [[round(float(x), 2), round(float(y), 2)] for x, y in self.vertices]
        ring.append(ring[0])
        return {
            "type": "Feature",
            "id": f"synthetic-{index}",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": self.classification, "color": TUMOUR_COLOR},
            },
        }


@dataclass(frozen=True)
class SlideSpec:
    """Everything needed to render a slide deterministically."""

    width: int
    height: int
    mpp: float
    app_mag: int
    tissue: tuple[SlidePolygon, ...]
    tumours: tuple[SlidePolygon, ...]
    seed: int

    def class_map(self, downsample: int) -> np.ndarray:
        """Ground truth at ``1/downsample`` scale: 0 background, 1 tissue, 2 tumour (uint8)."""
        shape = (-(-self.height // downsample), -(-self.width // downsample))
        out = np.zeros(shape, np.uint8)
        for poly, value in [(p, TISSUE) for p in self.tissue] + [(p, TUMOUR) for p in self.tumours]:
            xy = poly.vertices / downsample
            rr, cc = draw_polygon(xy[:, 1], xy[:, 0], shape=shape)
            out[rr, cc] = value
        return out

    def geojson(self) -> dict[str, Any]:
        """Tumour annotations as a GeoJSON FeatureCollection (level-0 pixel coordinates)."""
        return {
            "type": "FeatureCollection",
            "features": [p.geojson_feature(i) for i, p in enumerate(self.tumours)],
        }


@dataclass(frozen=True)
class SlideInfo:
    """What was written: path, level sizes (w, h) and their downsamples."""

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]
    mpp: float
    app_mag: int


@dataclass(frozen=True)
class SyntheticSlide:
    """A written slide with its annotations and the spec that produced both."""

    slide: SlideInfo
    annotations_path: Path
    spec: SlideSpec


def make_slide_spec(
    rng: np.random.Generator,
    *,
    width: int = 4096,
    height: int = 3072,
    mpp: float = 0.25,
    n_tissue: int | tuple[int, int] = (1, 2),
    n_tumours: int | tuple[int, int] = (1, 3),
) -> SlideSpec:
    """Random tissue pieces laid out left to right, each holding up to ``n_tumours`` tumours."""
    pieces = _count(rng, n_tissue)
    tissue, tumours = [], []
    slot_w = width / pieces
    for i in range(pieces):
        cx = (i + 0.5) * slot_w + rng.uniform(-0.05, 0.05) * slot_w
        cy = height / 2 + rng.uniform(-0.05, 0.05) * height
        r_min = 0.33 * min(slot_w, height)
        radii = _blob_radii(rng, 96, r_min, 1.35 * r_min)
        tissue.append(SlidePolygon(_star_polygon(cx, cy, radii), "Tissue"))
        tumours.extend(_tumours_in(rng, cx, cy, r_min, _count(rng, n_tumours)))
    app_mag = round(10.0 / mpp) if mpp > 0 else 40
    return SlideSpec(
        width, height, mpp, app_mag, tuple(tissue), tuple(tumours), int(rng.integers(0, 2**31 - 1))
    )


def generate_slide(
    rng: np.random.Generator,
    out_dir: str | Path,
    *,
    name: str = "slide",
    width: int = 4096,
    height: int = 3072,
    mpp: float = 0.25,
    tile: int = 256,
    quality: int = 80,
    patient_name: str | None = "SYNTHETIC^PATIENT",
    n_tumours: int | tuple[int, int] = (1, 3),
) -> SyntheticSlide:
    """Make a spec, write ``<name>.tiff`` and ``<name>.geojson`` into ``out_dir``.

    ``patient_name`` goes on the label and macro images; ``None`` writes neither.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = make_slide_spec(rng, width=width, height=height, mpp=mpp, n_tumours=n_tumours)
    info = write_slide_tiff(spec, out / f"{name}.tiff", tile=tile, quality=quality, patient_name=patient_name)
    annotations = write_annotations(spec, out / f"{name}.geojson")
    return SyntheticSlide(info, annotations, spec)


def write_annotations(spec: SlideSpec, path: str | Path) -> Path:
    """Write the tumour polygons as GeoJSON."""
    out = Path(path)
    out.write_text(json.dumps(spec.geojson()))
    return out


def write_slide_tiff(
    spec: SlideSpec,
    path: str | Path,
    *,
    tile: int = 256,
    quality: int = 80,
    patient_name: str | None = None,
    maxworkers: int | None = None,
) -> SlideInfo:
    """Write the pyramidal, JPEG-tiled, Aperio-described BigTIFF for ``spec``."""
    path = Path(path)
    renderer = _StripRenderer(spec, tile)
    dims = _level_dimensions(spec.width, spec.height, tile)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, tifffile.TiffWriter(path, bigtiff=True) as tif:
        level1 = _open_level1(Path(tmp), renderer.padded_shape)
        common: dict[str, Any] = {
            "tile": (tile, tile),
            "compression": "jpeg",
            "compressionargs": {"level": quality},
            "photometric": "rgb",
            "metadata": None,
            "maxworkers": maxworkers,
        }
        tif.write(
            renderer.tiles(level1),
            shape=(spec.height, spec.width, 3),
            dtype=np.uint8,
            subfiletype=0,
            description=_aperio_description(spec, tile, quality),
            **common,
        )
        lowest = _write_lower_levels(tif, level1, dims, common)
        if patient_name is not None:
            _write_associated(tif, spec, lowest, patient_name)
    return SlideInfo(path, tuple(dims), spec.mpp, spec.app_mag)


def _write_lower_levels(
    tif: tifffile.TiffWriter, level1: np.ndarray, dims: list[tuple[int, int]], common: dict[str, Any]
) -> np.ndarray:
    """Levels 1.. from the level-1 memmap; returns the smallest level (for the macro image)."""
    current = level1
    for level, (w, h) in enumerate(dims[1:], start=1):
        if level > 1:
            current = _block_mean(current, LEVEL_DOWNSAMPLE)
        tile = common["tile"][0]
        tif.write(_iter_tiles(current, w, h, tile), shape=(h, w, 3), dtype=np.uint8, subfiletype=1, **common)
    return np.asarray(current[: dims[-1][1], : dims[-1][0]])


def _write_associated(
    tif: tifffile.TiffWriter, spec: SlideSpec, lowest: np.ndarray, patient_name: str
) -> None:
    label = _label_image(patient_name, spec.seed)
    macro = _macro_image(lowest, label)
    # OpenSlide 4 tells label from macro by NewSubfileType: 1 (reduced) vs 9 (reduced + macro).
    for name, image, subfiletype in (("label", label, 1), ("macro", macro, 9)):
        h, w = image.shape[:2]
        tif.write(
            image,
            photometric="rgb",
            compression="lzw",
            subfiletype=subfiletype,
            description=f"Aperio Image Library v10.0.50\n{name} {w}x{h}",
            metadata=None,
        )


class _StripRenderer:
    """Renders level 0 one tile row at a time, from the spec only (deterministic per strip)."""

    def __init__(self, spec: SlideSpec, tile: int) -> None:
        self.spec = spec
        self.tile = tile
        self.rows = -(-spec.height // tile)
        self.cols = -(-spec.width // tile)
        self.padded_shape = (self.rows * tile, self.cols * tile)
        rng = np.random.default_rng([spec.seed, 1])
        self.class_map = spec.class_map(_MASK_DOWNSAMPLE)
        self.nuclei = _slide_nuclei(rng, spec, self.class_map)
        self.order = np.argsort(self.nuclei.y)
        self.sorted_y = self.nuclei.y[self.order]
        self.textures = _fibre_textures(rng, spec.mpp)
        self.coarse = _coarse_fields(rng, self.padded_shape)
        self.stains = StainMatrix.default().jittered(rng, 0.03)
        self.lut = _StainLut(self.stains)

    def tiles(self, level1: np.ndarray) -> Iterator[np.ndarray]:
        """Level-0 tiles in row-major order; fills ``level1`` as a side effect.

        The next strip renders in a worker thread while tifffile JPEG-encodes the current one
        (numpy releases the GIL), which nearly halves wall time on two cores.
        """
        t = self.tile
        q = t // LEVEL_DOWNSAMPLE
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.render_strip, 0)
            for r in range(self.rows):
                strip = pending.result()
                if r + 1 < self.rows:
                    pending = pool.submit(self.render_strip, r + 1)
                level1[r * q : (r + 1) * q] = _block_mean(strip, LEVEL_DOWNSAMPLE)
                for c in range(self.cols):
                    yield np.ascontiguousarray(strip[:, c * t : (c + 1) * t])

    def render_strip(self, r: int) -> np.ndarray:
        """RGB uint8 strip ``r`` of shape (tile, padded width, 3)."""
        t, width = self.tile, self.padded_shape[1]
        y0 = r * t
        rng = np.random.default_rng([self.spec.seed, 2, r])
        classes = self._strip_classes(y0)
        tissue = classes > BACKGROUND
        h = np.zeros((t, width), np.float32)
        nuclei_mask = paint_nuclei(h, self._nuclei_near(y0, y0 + t), origin=(y0, 0.0))
        h *= 1.0 + 0.18 * rng.standard_normal(h.shape, dtype=np.float32)
        h += np.where(classes == TUMOUR, np.float32(0.06), np.float32(0.03))
        h = ndimage.gaussian_filter(h, 0.25 / self.spec.mpp, mode="nearest")
        e = self._strip_eosin(y0, classes)
        e[nuclei_mask] *= 0.5
        h[~tissue] = 0.0
        e[~tissue] = 0.0
        rgb = self.lut(h, e)
        noise = rng.integers(-3, 4, rgb.shape, dtype=np.int16)
        return np.clip(rgb.astype(np.int16) + noise, 0, 255).astype(np.uint8)

    def _strip_classes(self, y0: int) -> np.ndarray:
        t, width = self.tile, self.padded_shape[1]
        ds = _MASK_DOWNSAMPLE
        rows = np.minimum((y0 + np.arange(t)) // ds, self.class_map.shape[0] - 1)
        cols = np.minimum(np.arange(width) // ds, self.class_map.shape[1] - 1)
        out = self.class_map[np.ix_(rows, cols)]
        out[:, self.spec.width :] = BACKGROUND
        if y0 + t > self.spec.height:
            out[max(self.spec.height - y0, 0) :] = BACKGROUND
        return out

    def _nuclei_near(self, y0: float, y1: float) -> Nuclei:
        margin = 12.0 / self.spec.mpp
        lo, hi = np.searchsorted(self.sorted_y, [y0 - margin, y1 + margin])
        return self.nuclei.select(self.order[lo:hi])

    def _strip_eosin(self, y0: int, classes: np.ndarray) -> np.ndarray:
        t, width = classes.shape
        rows = (y0 + np.arange(t)) % _TEXTURE
        cols = np.arange(width) % _TEXTURE
        weight = _upsample_rows(self.coarse[0], y0, t, width)
        variation = _upsample_rows(self.coarse[1], y0, t, width)
        fibres = (
            weight * self.textures[0][np.ix_(rows, cols)]
            + (1 - weight) * self.textures[1][np.ix_(rows, cols)]
        )
        stroma = 0.28 + 0.06 * fibres + 0.05 * variation
        cytoplasm = 0.75 * 0.17 + 0.25 * stroma + 0.01 * variation
        return np.where(classes == TUMOUR, cytoplasm, stroma).astype(np.float32)


class _StainLut:
    """Beer-Lambert through a lookup table on quantised (H, E): ~5x faster than ``compose_he``.

    Quantisation steps (H 1/128, E 1/256 OD) change a channel by under 2 grey levels, below the
    pixel noise added afterwards.
    """

    H_STEPS, E_STEPS, H_MAX, E_MAX = 256, 256, 2.0, 1.0

    def __init__(self, stains: StainMatrix) -> None:
        h = np.linspace(0.0, self.H_MAX, self.H_STEPS, dtype=np.float32)
        e = np.linspace(0.0, self.E_MAX, self.E_STEPS, dtype=np.float32)
        hh, ee = np.meshgrid(h, e, indexing="ij")
        self.table = compose_he(hh, ee, stains, background=GLASS_BRIGHTNESS).reshape(-1, 3)

    def __call__(self, h: np.ndarray, e: np.ndarray) -> np.ndarray:
        hi = np.clip(h * ((self.H_STEPS - 1) / self.H_MAX) + 0.5, 0, self.H_STEPS - 1).astype(np.int32)
        ei = np.clip(e * ((self.E_STEPS - 1) / self.E_MAX) + 0.5, 0, self.E_STEPS - 1).astype(np.int32)
        return self.table[hi * self.E_STEPS + ei]


def _slide_nuclei(rng: np.random.Generator, spec: SlideSpec, class_map: np.ndarray) -> Nuclei:
    """Sample normal nuclei over non-tumour tissue and tumour nuclei over tumour, globally."""
    box = (0.0, 0.0, float(spec.height), float(spec.width))
    parts = []
    for style, cls in ((NORMAL_STYLE, TISSUE), (TUMOUR_STYLE, TUMOUR)):
        nuclei = sample_nuclei(rng, style, area_px=box, mpp=spec.mpp)
        iy = np.minimum((nuclei.y // _MASK_DOWNSAMPLE).astype(np.int64), class_map.shape[0] - 1)
        ix = np.minimum((nuclei.x // _MASK_DOWNSAMPLE).astype(np.int64), class_map.shape[1] - 1)
        parts.append(nuclei.select(class_map[iy, ix] == cls))
    return Nuclei.concat(parts)


def _fibre_textures(rng: np.random.Generator, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Two seamlessly tileable fibre textures (horizontal, vertical), unit variance."""
    sigma = (max(0.6 / mpp, 0.5), max(4.0 / mpp, 1.0))
    out = []
    for s in (sigma, sigma[::-1]):
        tex = ndimage.gaussian_filter(
            rng.standard_normal((_TEXTURE, _TEXTURE)).astype(np.float32), s, mode="wrap"
        )
        out.append(tex / (float(tex.std()) + 1e-6))
    return out[0], out[1]


def _coarse_fields(rng: np.random.Generator, padded_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Low-resolution fields (1/32 scale): fibre orientation weight in [0, 1], unit-variance variation."""
    shape = (padded_shape[0] // _COARSE + 2, padded_shape[1] // _COARSE + 2)
    weight = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 3.0)
    weight = 1.0 / (1.0 + np.exp(-weight / (float(weight.std()) + 1e-6) * 3.0))
    variation = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
    return weight.astype(np.float32), (variation / (float(variation.std()) + 1e-6)).astype(np.float32)


def _upsample_rows(field: np.ndarray, y0: int, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling (x ``_COARSE``) of the rows of a coarse field that cover one strip."""
    fy = (y0 + np.arange(height, dtype=np.float32)) / _COARSE
    iy = fy.astype(np.int64)
    wy = (fy - iy)[:, None]
    rows = field[iy] * (1 - wy) + field[iy + 1] * wy
    fx = np.arange(width, dtype=np.float32) / _COARSE
    ix = fx.astype(np.int64)
    wx = fx - ix
    return (rows[:, ix] * (1 - wx) + rows[:, ix + 1] * wx).astype(np.float32)


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Downsample by ``factor`` (averaging), padding the edge by replication if needed."""
    h, w = image.shape[:2]
    ph, pw = -(-h // factor) * factor, -(-w // factor) * factor
    arr = np.asarray(image)
    if (ph, pw) != (h, w):
        arr = np.pad(arr, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    blocks = arr.reshape(ph // factor, factor, pw // factor, factor, 3).astype(np.float32)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def _iter_tiles(image: np.ndarray, w: int, h: int, tile: int) -> Iterator[np.ndarray]:
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            block = np.zeros((tile, tile, 3), np.uint8)
            part = np.asarray(image[y : min(y + tile, h), x : min(x + tile, w)])
            block[: part.shape[0], : part.shape[1]] = part
            yield block


def _open_level1(tmp: Path, padded_shape: tuple[int, int]) -> np.ndarray:
    shape = (padded_shape[0] // LEVEL_DOWNSAMPLE, padded_shape[1] // LEVEL_DOWNSAMPLE, 3)
    return np.lib.format.open_memmap(tmp / "level1.npy", mode="w+", dtype=np.uint8, shape=shape)


def _level_dimensions(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """Level sizes, 4x apart, down to the last level whose longer side is at least one tile."""
    dims = [(width, height)]
    while max(dims[-1]) // LEVEL_DOWNSAMPLE >= tile:
        w, h = dims[-1]
        dims.append((-(-w // LEVEL_DOWNSAMPLE), -(-h // LEVEL_DOWNSAMPLE)))
    return dims


def _aperio_description(spec: SlideSpec, tile: int, quality: int) -> str:
    w, h = spec.width, spec.height
    fields = [
        f"Aperio Image Library v10.0.50\r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q={quality}",
        f"AppMag = {spec.app_mag}",
        f"MPP = {spec.mpp:.4f}",
        "ScanScope ID = HOICHAN-SYNTHETIC",
        "Date = 01/01/26",
        "Time = 12:00:00",
        "Left = 0",
        "Top = 0",
    ]
    return "|".join(fields)


def _label_image(patient_name: str, seed: int) -> np.ndarray:
    """A slide label with the patient name in text and a fake barcode (PHI on purpose)."""
    image = Image.new("RGB", (400, 300), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    draw.text((20, 20), patient_name, fill=(0, 0, 0))
    draw.text((20, 50), f"SYN-{seed % 100000:05d}", fill=(0, 0, 0))
    bars = np.random.default_rng(seed).integers(0, 2, 60)
    for i, bar in enumerate(bars):
        if bar:
            draw.rectangle((20 + i * 6, 120, 23 + i * 6, 260), fill=(0, 0, 0))
    return np.asarray(image)


def _macro_image(lowest: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Overview photo: label on the left, slide thumbnail on the right, both 300 px tall."""
    thumb = Image.fromarray(np.ascontiguousarray(lowest)).convert("RGB")
    thumb = thumb.resize((max(1, round(thumb.width * 300 / thumb.height)), 300))
    return np.concatenate([label, np.asarray(thumb)], axis=1)


def _tumours_in(rng: np.random.Generator, cx: float, cy: float, r_min: float, n: int) -> list[SlidePolygon]:
    """Tumour blobs guaranteed inside the disc of radius 0.8 * r_min (inside the tissue piece)."""
    out = []
    for _ in range(n):
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.3) * r_min
        radius = rng.uniform(0.25, 0.45) * r_min
        tx, ty = cx + dist * np.cos(angle), cy + dist * np.sin(angle)
        radii = _blob_radii(rng, 64, 0.7 * radius, min(radius, 0.8 * r_min - dist))
        out.append(SlidePolygon(_star_polygon(tx, ty, radii), TUMOUR_CLASS_NAME))
    return out


def _blob_radii(rng: np.random.Generator, n: int, r_lo: float, r_hi: float) -> np.ndarray:
    """Smooth random radii in [r_lo, r_hi] from a few low harmonics."""
    theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    wave = np.zeros_like(theta)
    for k in range(1, 5):
        wave += rng.normal(0, 1.0 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    wave = (wave - wave.min()) / (float(np.ptp(wave)) + 1e-9)
    return r_lo + (r_hi - r_lo) * wave


def _star_polygon(cx: float, cy: float, radii: np.ndarray) -> np.ndarray:
    theta = np.linspace(0.0, 2 * np.pi, radii.size, endpoint=False)
    return np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)], axis=1)


def _count(rng: np.random.Generator, n: int | tuple[int, int]) -> int:
    return n if isinstance(n, int) else int(rng.integers(n[0], n[1] + 1))
