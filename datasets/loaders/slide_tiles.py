"""Whole slides + GeoJSON annotations -> labelled tiles at a chosen resolution (mpp).

Why rasterise once: testing each tile against every polygon is slow and fragile; instead each
annotation class is rasterised once onto a coarse grid (8 x 8 cells per tile), and a tile's
coverage of a class is the mean of its window. Tiles are read with OpenSlide at the best level
for the target mpp (the most downsampled level that is still at least as sharp) and resized.

Labelling rule: a tile takes the class that covers at least ``min_coverage`` of it; a tile that
no annotation touches and that is mostly tissue takes ``background_label`` (e.g. "normal");
partly annotated tiles are skipped as ambiguous. Coordinates are level-0 pixels (QuPath export
convention). Class names are lower-cased and "tumor" is spelled "tumour" unless ``label_map``
says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openslide
from PIL import Image
from skimage.draw import polygon as draw_polygon
from skimage.filters import threshold_otsu

from datasets.errors import AnnotationError, DatasetError, EmptyDatasetError

DEFAULT_LABEL_MAP: dict[str, str] = {"tumor": "tumour", "tumour": "tumour"}
_CELLS_PER_TILE = 8


@dataclass(frozen=True)
class AnnotationPolygon:
    """One polygon (exterior ring and holes, each (n, 2) as x, y in level-0 pixels) with its label."""

    label: str
    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class LabelledTile:
    """A tile image at the requested mpp with its label and level-0 position."""

    image: np.ndarray  # uint8 (tile_size, tile_size, 3)
    label: str
    x: int
    y: int
    mpp: float
    coverage: float  # fraction of the tile covered by its label's class (tissue for background)


def read_geojson_annotations(
    path: str | Path, label_map: Mapping[str, str] | None = None
) -> list[AnnotationPolygon]:
    """Polygons from a FeatureCollection (or a bare list of features, as QuPath sometimes writes)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AnnotationError(path, f"unreadable GeoJSON ({exc})") from exc
    features = data.get("features") if isinstance(data, dict) else data
    if not isinstance(features, list):
        raise AnnotationError(path, "expected a FeatureCollection or a list of features")
    mapping = {k.lower(): v for k, v in (label_map or DEFAULT_LABEL_MAP).items()}
    out: list[AnnotationPolygon] = []
    for n, feature in enumerate(features):
        out.extend(_feature_polygons(path, n, feature, mapping))
    return out


def iter_labelled_tiles(
    slide_path: str | Path,
    annotations: str | Path | list[AnnotationPolygon],
    *,
    mpp: float = 0.5,
    tile_size: int = 224,
    stride: int | None = None,
    min_coverage: float = 0.5,
    background_label: str | None = "normal",
    min_tissue: float = 0.5,
    label_map: Mapping[str, str] | None = None,
) -> Iterator[LabelledTile]:
    """Yield labelled tiles on a regular grid (``stride`` in output pixels, default ``tile_size``)."""
    polygons = (
        annotations if isinstance(annotations, list) else read_geojson_annotations(annotations, label_map)
    )
    with openslide.OpenSlide(str(slide_path)) as slide:
        reader = _TileReader(slide, Path(slide_path), mpp, tile_size)
        classes = sorted({p.label for p in polygons})
        cell = reader.footprint / _CELLS_PER_TILE
        masks = {
            c: _rasterise([p for p in polygons if p.label == c], slide.dimensions, cell) for c in classes
        }
        tissue = _tissue_mask(slide, cell)
        step = reader.footprint * (stride or tile_size) / tile_size
        for y, x in _grid(slide.dimensions, reader.footprint, step):
            labelled = _label_for(masks, tissue, x, y, cell, min_coverage, background_label, min_tissue)
            if labelled is not None:
                yield LabelledTile(reader.read(x, y), labelled[0], int(x), int(y), mpp, labelled[1])


def collect_labelled_tiles(
    slide_path: str | Path, annotations: str | Path | list[AnnotationPolygon], **options: Any
) -> tuple[np.ndarray, list[str]]:
    """All tiles of a slide as ``(images uint8 (n, s, s, 3), labels)``; raises if there are none."""
    tiles = list(iter_labelled_tiles(slide_path, annotations, **options))
    if not tiles:
        raise EmptyDatasetError(slide_path)
    return np.stack([t.image for t in tiles]), [t.label for t in tiles]


class _TileReader:
    """Reads a level-0 footprint at the best level and resizes it to ``tile_size``."""

    def __init__(self, slide: openslide.OpenSlide, path: Path, mpp: float, tile_size: int) -> None:
        base_mpp = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
        if not base_mpp:
            raise DatasetError(f"{path}: slide has no mpp; cannot cut tiles at {mpp} mpp")
        self.slide = slide
        self.tile_size = tile_size
        self.scale = mpp / float(base_mpp)  # level-0 pixels per output pixel
        self.footprint = tile_size * self.scale
        self.level = slide.get_best_level_for_downsample(self.scale + 1e-6)
        self.downsample = float(slide.level_downsamples[self.level])

    def read(self, x: float, y: float) -> np.ndarray:
        size = max(1, round(self.footprint / self.downsample))
        region = self.slide.read_region((int(x), int(y)), self.level, (size, size))
        rgb = Image.alpha_composite(Image.new("RGBA", region.size, (255, 255, 255, 255)), region).convert(
            "RGB"
        )
        if size != self.tile_size:
            rgb = rgb.resize((self.tile_size, self.tile_size), Image.Resampling.BILINEAR)
        return np.asarray(rgb)


def _feature_polygons(path: Path, n: int, feature: Any, mapping: dict[str, str]) -> list[AnnotationPolygon]:
    if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
        raise AnnotationError(path, f"feature {n} has no geometry")
    label = _feature_label(feature)
    if label is None:
        raise AnnotationError(path, f"feature {n} has no classification name")
    label = mapping.get(label.lower(), label.lower())
    geometry = feature["geometry"]
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        rings_list = [coords]
    elif kind == "MultiPolygon":
        rings_list = coords
    else:
        return []  # points and lines carry no area to label tiles with
    try:
        return [_polygon(label, rings) for rings in rings_list]
    except (TypeError, ValueError, IndexError) as exc:
        raise AnnotationError(path, f"feature {n}: bad coordinates ({exc})") from exc


def _feature_label(feature: dict[str, Any]) -> str | None:
    props = feature.get("properties") or {}
    classification = props.get("classification")
    if isinstance(classification, dict) and classification.get("name"):
        return str(classification["name"])
    for key in ("label", "name", "class"):
        if props.get(key):
            return str(props[key])
    return None


def _polygon(label: str, rings: list[Any]) -> AnnotationPolygon:
    arrays = [np.asarray(r, dtype=np.float64)[:, :2] for r in rings]
    if arrays[0].shape[0] < 3:
        raise ValueError("a polygon ring needs at least 3 points")
    return AnnotationPolygon(label, arrays[0], tuple(arrays[1:]))


def _rasterise(polygons: list[AnnotationPolygon], dims: tuple[int, int], cell: float) -> np.ndarray:
    shape = (int(np.ceil(dims[1] / cell)), int(np.ceil(dims[0] / cell)))
    mask = np.zeros(shape, bool)
    for p in polygons:
        rr, cc = draw_polygon(p.exterior[:, 1] / cell - 0.5, p.exterior[:, 0] / cell - 0.5, shape=shape)
        mask[rr, cc] = True
        for hole in p.holes:
            rr, cc = draw_polygon(hole[:, 1] / cell - 0.5, hole[:, 0] / cell - 0.5, shape=shape)
            mask[rr, cc] = False
    return mask


def _tissue_mask(slide: openslide.OpenSlide, cell: float) -> np.ndarray:
    """Tissue on the same grid: Otsu on saturation of a thumbnail (glass is grey-white)."""
    w, h = slide.dimensions
    shape = (int(np.ceil(h / cell)), int(np.ceil(w / cell)))
    thumb = np.asarray(slide.get_thumbnail((shape[1], shape[0])).convert("RGB").resize((shape[1], shape[0])))
    rgb = thumb.astype(np.float32)
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    if float(saturation.max()) - float(saturation.min()) < 1.0:
        return np.zeros(shape, bool)
    threshold = max(float(threshold_otsu(saturation)), 15.0)
    return np.asarray(saturation > threshold)


def _grid(dims: tuple[int, int], footprint: float, step: float) -> Iterator[tuple[float, float]]:
    w, h = dims
    for y in np.arange(0.0, h - footprint + 1e-6, step):
        for x in np.arange(0.0, w - footprint + 1e-6, step):
            yield float(y), float(x)


def _label_for(
    masks: dict[str, np.ndarray],
    tissue: np.ndarray,
    x: float,
    y: float,
    cell: float,
    min_coverage: float,
    background_label: str | None,
    min_tissue: float,
) -> tuple[str, float] | None:
    r0, c0 = round(y / cell), round(x / cell)
    window = (slice(r0, r0 + _CELLS_PER_TILE), slice(c0, c0 + _CELLS_PER_TILE))
    coverage = {label: float(mask[window].mean()) for label, mask in masks.items()}
    best = max(coverage, key=lambda k: coverage[k], default=None)
    if best is not None and coverage[best] >= min_coverage:
        return best, coverage[best]
    if any(v > 0 for v in coverage.values()) or background_label is None:
        return None
    tissue_fraction = float(tissue[window].mean())
    return (background_label, tissue_fraction) if tissue_fraction >= min_tissue else None
