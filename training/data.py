"""Data sources -> model-ready examples, split into train and validation.

Every source ends in the same two shapes: ``ClassificationSet`` (a stack of
(C, H, W) inputs with 0/1 targets) or ``SegmentationSet`` (volumes on the
card's grid with their masks). Preprocessing is the card's, via
``training.preprocess``. Errors from ``datasets`` are wrapped into
``training.errors`` here, so the CLI catches one family.

Splits are by source item (series, slide), never by tile or slice, and seeded,
so validation really is held out and a rerun gets the same split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datasets import errors as dataset_errors
from models.card import InputSpec
from training.errors import DataSourceError, EmptyDatasetError, MissingLabelledSeriesError
from training.preprocess import image_to_input, mask_to_grid, tiles_to_input, volume_to_input
from training.recipe import (
    DataSpec,
    DicomFolderSource,
    Kind,
    ManifestSource,
    NpzSource,
    SlidesSource,
    SyntheticCT,
    SyntheticRadiographs,
    SyntheticTiles,
)

FloatArray = NDArray[np.float32]


@dataclass(frozen=True)
class ClassificationSet:
    """Inputs (N, C, H, W) float32 as the network sees them, targets (N,) int64 in {0, 1}."""

    inputs: FloatArray
    targets: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass(frozen=True)
class SegmentationSet:
    """Volumes (C, z, y, x) on the card's grid and their masks (z, y, x) in {0, 1}."""

    volumes: list[FloatArray]
    masks: list[NDArray[np.uint8]]

    def __len__(self) -> int:
        return len(self.volumes)


Examples = ClassificationSet | SegmentationSet


@dataclass(frozen=True)
class DataBundle:
    """Train and validation examples plus a one-line description for the report."""

    train: Examples
    val: Examples
    description: str


@dataclass(frozen=True)
class DataRequest:
    """What a source needs to know about the model: kind, input spec and its positive label."""

    kind: Kind
    spec: InputSpec
    label: str
    evaluation: bool = False


def load_data(data: DataSpec, request: DataRequest) -> DataBundle:
    """Build the examples for ``data``; with ``evaluation`` everything goes to the validation split."""
    loaders: dict[type, Callable[[Any, DataRequest], DataBundle]] = {
        SyntheticRadiographs: _synthetic_radiographs,
        SyntheticCT: _synthetic_ct,
        SyntheticTiles: _synthetic_tiles,
        DicomFolderSource: _dicom_folder,
        SlidesSource: _slides,
        NpzSource: _npz,
        ManifestSource: _manifest,
    }
    _check_kind(data, request.kind)
    with _wrapped(data.source):
        bundle = loaders[type(data)](data, request)
    _check_bundle(bundle, data.source, request)
    return bundle


_SOURCE_KINDS: dict[str, set[str]] = {
    "synthetic-radiographs": {"classification-2d"},
    "synthetic-ct": {"segmentation-3d"},
    "synthetic-he-tiles": {"tile-classification"},
    "dicom-folder": {"classification-2d", "segmentation-3d"},
    "slides": {"tile-classification"},
    "npz": {"classification-2d", "tile-classification"},
    "manifest": {"classification-2d", "segmentation-3d", "tile-classification"},
}


def _check_kind(data: DataSpec, kind: Kind) -> None:
    if kind not in _SOURCE_KINDS[data.source]:
        raise DataSourceError(data.source, f"cannot feed {kind} (feeds {sorted(_SOURCE_KINDS[data.source])})")


@contextmanager
def _wrapped(source: str) -> Iterator[None]:
    """``datasets`` errors -> ``training`` errors naming the source."""
    try:
        yield
    except dataset_errors.MissingSeriesError as exc:
        raise MissingLabelledSeriesError(source, exc.missing) from exc
    except dataset_errors.EmptyDatasetError as exc:
        raise EmptyDatasetError(source, "all", f"no items found in {exc.source}") from exc
    except dataset_errors.DatasetError as exc:
        raise DataSourceError(source, str(exc)) from exc


def _check_bundle(bundle: DataBundle, source: str, request: DataRequest) -> None:
    splits = [("val", bundle.val)] if request.evaluation else [("train", bundle.train), ("val", bundle.val)]
    for name, split in splits:
        if len(split) == 0:
            raise EmptyDatasetError(source, name)
        if isinstance(split, ClassificationSet) and len(np.unique(split.targets)) < 2:
            raise EmptyDatasetError(source, name, "needs both positive and negative examples")
        if isinstance(split, SegmentationSet) and name == "train" and not any(m.any() for m in split.masks):
            raise EmptyDatasetError(source, name, "no foreground voxel in any mask")


# -- synthetic -----------------------------------------------------------------------------------
def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for train and validation, so n_train never changes the validation set."""
    return np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])


def _balanced_labels(rng: np.random.Generator, n: int) -> NDArray[np.int64]:
    return rng.permutation(np.arange(n) % 2).astype(np.int64)


def _synthetic_radiographs(data: SyntheticRadiographs, request: DataRequest) -> DataBundle:
    from datasets.synthetic.radiograph import generate_radiograph

    def make(rng: np.random.Generator, n: int) -> ClassificationSet:
        labels = _balanced_labels(rng, n)
        inputs = []
        for label in labels:
            image = generate_radiograph(
                rng,
                size=data.size,
                has_opacity=bool(label),
                n_opacities=data.n_opacities,
                amplitude=data.amplitude,
                noise=data.noise,
            )
            spacing = (image.pixel_spacing_mm, image.pixel_spacing_mm)
            inputs.append(image_to_input(image.image, spacing, request.spec))
        return ClassificationSet(np.stack(inputs), labels)

    return _synthetic_bundle(data, request, make, f"{data.size}px synthetic radiographs")


def _synthetic_ct(data: SyntheticCT, request: DataRequest) -> DataBundle:
    from datasets.synthetic.ct import generate_ct_case

    def make(rng: np.random.Generator, n: int) -> SegmentationSet:
        volumes, masks = [], []
        for _ in range(n):
            case = generate_ct_case(
                rng,
                shape=data.shape,
                spacing_mm=data.spacing_mm,
                n_lesions=data.n_lesions,
                lesion_radius_mm=data.lesion_radius_mm,
                lung_lesion_hu=data.lung_lesion_hu,
                liver_contrast_hu=data.liver_contrast_hu,
                noise_hu=data.noise_hu,
            )
            volume, _ = volume_to_input(case.volume_hu, case.spacing_mm, request.spec)
            volumes.append(volume)
            masks.append(mask_to_grid(case.lesion_mask, case.spacing_mm, request.spec))
        return SegmentationSet(volumes, masks)

    return _synthetic_bundle(data, request, make, f"synthetic CT {data.shape}")


def _synthetic_tiles(data: SyntheticTiles, request: DataRequest) -> DataBundle:
    from datasets.synthetic.he_tiles import generate_he_tiles

    size, mpp = request.spec.patch_size[0], float(request.spec.mpp or 0.5)

    def make(rng: np.random.Generator, n: int) -> ClassificationSet:
        tiles, labels = generate_he_tiles(rng, n, size=size, mpp=mpp, tumour_fraction=data.tumour_fraction)
        return ClassificationSet(tiles_to_input(tiles, request.spec), labels.astype(np.int64))

    return _synthetic_bundle(data, request, make, f"synthetic H&E tiles {size}px at {mpp} mpp")


def _synthetic_bundle(
    data: SyntheticRadiographs | SyntheticCT | SyntheticTiles,
    request: DataRequest,
    make: Callable[[np.random.Generator, int], Examples],
    what: str,
) -> DataBundle:
    train_rng, val_rng = _rngs(data.seed)
    val = make(val_rng, data.n_val)
    train = _empty_like(val) if request.evaluation else make(train_rng, data.n_train)
    return DataBundle(train, val, f"{what}: {len(train)} train / {len(val)} val, seed {data.seed}")


def _empty_like(examples: Examples) -> Examples:
    if isinstance(examples, SegmentationSet):
        return SegmentationSet([], [])
    shape = (0, *examples.inputs.shape[1:])
    return ClassificationSet(np.zeros(shape, np.float32), np.zeros(0, np.int64))


# -- splitting -----------------------------------------------------------------------------------
def split_indices(n: int, val_fraction: float, seed: int, evaluation: bool) -> tuple[list[int], list[int]]:
    """Seeded item-level split; at least one item on each side when there are two or more."""
    if evaluation:
        return [], list(range(n))
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(max(1, round(n * val_fraction)), max(n - 1, 1))
    return sorted(order[n_val:]), sorted(order[:n_val])


def _stack(sets: Sequence[ClassificationSet], spec: InputSpec) -> ClassificationSet:
    if not sets:
        shape = (0, spec.channels, *spec.patch_size)
        return ClassificationSet(np.zeros(shape, np.float32), np.zeros(0, np.int64))
    return ClassificationSet(
        np.concatenate([s.inputs for s in sets]), np.concatenate([s.targets for s in sets])
    )


def _merge(sets: Sequence[SegmentationSet]) -> SegmentationSet:
    return SegmentationSet([v for s in sets for v in s.volumes], [m for s in sets for m in s.masks])


def _split_items(
    items: Sequence[Examples], spec: InputSpec, val_fraction: float, seed: int, evaluation: bool
) -> tuple[Examples, Examples]:
    train_idx, val_idx = split_indices(len(items), val_fraction, seed, evaluation)
    if items and isinstance(items[0], SegmentationSet):
        segs = [s for s in items if isinstance(s, SegmentationSet)]
        return _merge([segs[i] for i in train_idx]), _merge([segs[i] for i in val_idx])
    cls = [s for s in items if isinstance(s, ClassificationSet)]
    return _stack([cls[i] for i in train_idx], spec), _stack([cls[i] for i in val_idx], spec)


# -- DICOM folder --------------------------------------------------------------------------------
def _dicom_folder(data: DicomFolderSource, request: DataRequest) -> DataBundle:
    from datasets.loaders.dicom_folder import load_dicom_folder

    items = load_dicom_folder(data.root, data.labels_csv, label_column=data.label_column)
    examples: list[Examples] = []
    for item in items:
        volume, spacing = item.load_volume()
        if request.kind == "segmentation-3d":
            mask = _mask_for(data, item.columns, item.series_uid, volume.shape)
            examples.append(_volume_example(volume, mask, spacing, request.spec))
        else:
            positive = item.label.strip().lower() in {p.lower() for p in data.positive_labels}
            examples.append(_image_example(volume, spacing, int(positive), item.series_uid, request.spec))
    train, val = _split_items(examples, request.spec, data.val_fraction, data.seed, request.evaluation)
    return DataBundle(train, val, f"DICOM folder {data.root}: {len(train)} train / {len(val)} val")


def _mask_for(
    data: DicomFolderSource, columns: dict[str, str], series: str, shape: tuple[int, ...]
) -> NDArray[np.uint8]:
    if data.mask_column is None or not columns.get(data.mask_column):
        raise DataSourceError(data.source, f"series {series}: segmentation needs a mask_column entry")
    path = data.labels_csv.parent / columns[data.mask_column]
    return _load_mask(data.source, path, shape)


def _load_mask(source: str, path: Path, shape: tuple[int, ...]) -> NDArray[np.uint8]:
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataSourceError(source, f"mask {path}: {exc}") from exc
    if mask.shape != shape:
        raise DataSourceError(source, f"mask {path} has shape {mask.shape}, the series {shape}")
    return (mask > 0).astype(np.uint8)


def _image_example(
    volume: NDArray[np.float32], spacing: Sequence[float], target: int, name: str, spec: InputSpec
) -> ClassificationSet:
    if volume.shape[0] != 1:
        raise DataSourceError(name, f"a 2D classification example must be one image, got {volume.shape[0]}")
    x = image_to_input(volume[0], tuple(spacing)[1:], spec)
    return ClassificationSet(x[None], np.array([target], np.int64))


def _volume_example(
    volume: NDArray[np.float32], mask: NDArray[np.uint8], spacing: Sequence[float], spec: InputSpec
) -> SegmentationSet:
    x, _ = volume_to_input(volume, spacing, spec)
    return SegmentationSet([x], [mask_to_grid(mask, spacing, spec)])


# -- slides --------------------------------------------------------------------------------------
def _slides(data: SlidesSource, request: DataRequest) -> DataBundle:
    slides = sorted({p for pattern in data.patterns for p in data.root.glob(pattern)})
    pairs = [(s, s.with_suffix(".geojson")) for s in slides if s.with_suffix(".geojson").is_file()]
    if not pairs:
        raise EmptyDatasetError(data.source, "all", f"no slide with a same-stem .geojson in {data.root}")
    examples: list[Examples] = [
        _slide_tiles(
            slide, annotations, data.positive_label, data.background_label, request, data.min_coverage
        )
        for slide, annotations in pairs
    ]
    train, val = _split_items(examples, request.spec, data.val_fraction, data.seed, request.evaluation)
    return DataBundle(train, val, f"{len(pairs)} slides in {data.root}: {len(train)} / {len(val)} tiles")


def _slide_tiles(
    slide: Path,
    annotations: Any,
    positive: str,
    background: str,
    request: DataRequest,
    min_coverage: float = 0.5,
) -> ClassificationSet:
    from datasets.loaders.slide_tiles import iter_labelled_tiles

    images, targets = [], []
    for tile in iter_labelled_tiles(
        slide,
        annotations,
        mpp=float(request.spec.mpp or 0.5),
        tile_size=request.spec.patch_size[0],
        min_coverage=min_coverage,
        background_label=background,
    ):
        if tile.label in (positive, background):
            images.append(tile.image)
            targets.append(int(tile.label == positive))
    if not images:
        return _stack([], request.spec)
    return ClassificationSet(tiles_to_input(np.stack(images), request.spec), np.array(targets, np.int64))


# -- npz -----------------------------------------------------------------------------------------
def _npz(data: NpzSource, request: DataRequest) -> DataBundle:
    from datasets.loaders.npz import NpzSplit, load_medmnist_npz

    splits = load_medmnist_npz(data.path, splits=("train", "val"))

    def convert(split: NpzSplit) -> ClassificationSet:
        targets = np.isin(split.labels, data.positive_classes).astype(np.int64)
        if request.kind == "tile-classification":
            return ClassificationSet(_npz_rgb(data, split.images, request.spec), targets)
        inputs = [image_to_input(_npz_grey(data, image), (1.0, 1.0), request.spec) for image in split.images]
        return ClassificationSet(np.stack(inputs) if inputs else np.zeros((0, 1, 1, 1), np.float32), targets)

    val = convert(splits["val"])
    train = _empty_like(val) if request.evaluation else convert(splits["train"])
    return DataBundle(train, val, f"npz {data.path}: {len(train)} train / {len(val)} val")


def _npz_grey(data: NpzSource, image: NDArray[Any]) -> NDArray[np.float32]:
    if image.ndim != 2:
        raise DataSourceError(data.source, f"2D classification needs grey (h, w) images, got {image.shape}")
    return image.astype(np.float32)


def _npz_rgb(data: NpzSource, images: NDArray[Any], spec: InputSpec) -> FloatArray:
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1:3] != tuple(spec.patch_size):
        raise DataSourceError(data.source, f"tiles must be (n, {spec.patch_size}, 3) RGB, got {images.shape}")
    return tiles_to_input(images.astype(np.uint8), spec)


# -- manifest ------------------------------------------------------------------------------------
def _manifest(data: ManifestSource, request: DataRequest) -> DataBundle:
    from datasets.manifest import read_manifest

    manifest = read_manifest(data.folder)
    positives = {p.lower() for p in (data.positive_labels or [request.label])}
    examples = [_manifest_item(data, item, positives, request) for item in manifest.items]
    train, val = _split_items(examples, request.spec, data.val_fraction, data.seed, request.evaluation)
    return DataBundle(train, val, f"manifest {data.folder}: {len(train)} train / {len(val)} val")


def _manifest_item(data: ManifestSource, item: Any, positives: set[str], request: DataRequest) -> Examples:
    from datasets.manifest import resolve
    from inference.dicom_series import load_series

    files = [resolve(data.folder, f) for f in item.files]
    if request.kind == "tile-classification":
        if item.kind != "slide" or item.geometry is None:
            raise DataSourceError(data.source, f"item {item.id}: tiles need a slide with a geometry")
        label = positives_or_other(item.labels, positives, request.label)
        polygons = _geometry_polygons(item.geometry, label)
        return _slide_tiles(files[0], polygons, request.label, data.background_label, request)
    if item.kind != "dicom_series":
        raise DataSourceError(data.source, f"item {item.id}: {request.kind} needs a DICOM series")
    volume = load_series(files)
    if request.kind == "segmentation-3d":
        if item.mask is None:
            raise DataSourceError(data.source, f"item {item.id}: segmentation needs a mask file")
        mask = _load_mask(data.source, resolve(data.folder, item.mask), volume.shape)
        return _volume_example(volume.pixels, mask, volume.spacing, request.spec)
    target = int(any(label.lower() in positives for label in item.labels))
    return _image_example(volume.pixels, volume.spacing, target, item.id, request.spec)


def positives_or_other(labels: Sequence[str], positives: set[str], positive: str) -> str:
    """The card's label when the item carries a positive label, else the item's own first label."""
    return positive if any(label.lower() in positives for label in labels) else labels[0]


def _geometry_polygons(geometry: dict[str, Any], label: str) -> list[Any]:
    from datasets.loaders.slide_tiles import AnnotationPolygon

    kind, coords = geometry.get("type"), geometry.get("coordinates") or []
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    return [
        AnnotationPolygon(
            label,
            np.asarray(rings[0], np.float64)[:, :2],
            tuple(np.asarray(r, np.float64)[:, :2] for r in rings[1:]),
        )
        for rings in polygons
    ]
