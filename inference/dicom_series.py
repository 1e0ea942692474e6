"""A DICOM series (datasets or file paths) -> one volume in modality units with its geometry.

Slices are ordered by the projection of Image Position (Patient) on the slice
normal (the cross product of the Image Orientation (Patient) cosines), not by
Instance Number, which scanners do not number consistently. Pixel values are
rescaled with each slice's own Rescale Slope/Intercept (they may differ per
slice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from inference.errors import SeriesError
from inference.preprocessing import rescale_to_hu

SeriesInput = Sequence[Dataset | str | Path]
_ORIENTATION_TOL = 1e-3
_SPACING_REL_TOL = 0.05


@dataclass(frozen=True)
class Volume:
    """Pixels (z, y, x) in modality units (HU for CT) plus what is needed to map results back."""

    pixels: NDArray[np.float32] = field(repr=False)
    spacing: tuple[float, float, float]
    """(between slices, between rows, between columns) in mm."""
    origin: tuple[float, float, float]
    direction: NDArray[np.float64] = field(repr=False)
    """3x3: row cosine, column cosine, slice normal (patient coordinates)."""
    sop_instance_uids: tuple[str, ...]
    series_instance_uid: str | None
    study_instance_uid: str | None
    frame_of_reference_uid: str | None
    modality: str
    datasets: tuple[Dataset, ...] = field(repr=False)
    """The source instances in slice order (writers reference them)."""
    has_geometry: bool = True
    """False when the instances lack position/orientation/spacing and defaults were assumed."""

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.pixels.shape
        return int(z), int(y), int(x)


def read_datasets(items: SeriesInput) -> list[Dataset]:
    """Accept datasets or paths (pydicom reads each path once)."""
    return [item if isinstance(item, Dataset) else pydicom.dcmread(str(item)) for item in items]


def load_series(items: SeriesInput) -> Volume:
    """Stage 1 of the DICOM pipeline: instances -> sorted, rescaled volume with spacing and orientation."""
    datasets = read_datasets(items)
    series_uid = _check_single_series(datasets)
    _check_frames_and_size(datasets, series_uid)
    geometric = all(_has_geometry(ds) for ds in datasets)
    if geometric:
        ordered, slice_spacing, direction = _sort_by_position(datasets, series_uid)
    else:
        ordered, slice_spacing, direction = (
            _sort_by_instance_number(datasets),
            _thickness(datasets[0]),
            np.eye(3),
        )
    row_spacing, col_spacing, has_spacing = _pixel_spacing(ordered[0])
    first = ordered[0]
    return Volume(
        pixels=np.stack([_slice_values(ds) for ds in ordered]),
        spacing=(slice_spacing, row_spacing, col_spacing),
        origin=_origin(first),
        direction=direction,
        sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in ordered),
        series_instance_uid=series_uid,
        study_instance_uid=_text(first, "StudyInstanceUID"),
        frame_of_reference_uid=_text(first, "FrameOfReferenceUID"),
        modality=str(first.get("Modality", "")),
        datasets=tuple(ordered),
        has_geometry=geometric and has_spacing,
    )


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value) if value else None


def _check_single_series(datasets: list[Dataset]) -> str | None:
    if not datasets:
        raise SeriesError(None, "no instances given")
    uids = {_text(ds, "SeriesInstanceUID") for ds in datasets}
    if len(uids) > 1:
        raise SeriesError(None, f"instances from {len(uids)} series: {sorted(str(u) for u in uids)}")
    return uids.pop()


def _check_frames_and_size(datasets: list[Dataset], series_uid: str | None) -> None:
    if any("PixelData" not in ds for ds in datasets):
        raise SeriesError(series_uid, "an instance has no Pixel Data")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise SeriesError(series_uid, "multi-frame instances are not supported by the series loader")
    if any(int(ds.get("SamplesPerPixel", 1)) != 1 for ds in datasets):
        raise SeriesError(series_uid, "colour instances are not supported by the series loader")
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        raise SeriesError(series_uid, f"slices differ in size: {sorted(sizes)}")


def _has_geometry(ds: Dataset) -> bool:
    return "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds


def _direction(ds: Dataset) -> NDArray[np.float64]:
    cosines = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    row, col = cosines[:3], cosines[3:]
    return np.stack([row, col, np.cross(row, col)])


def _sort_by_position(
    datasets: list[Dataset], series_uid: str | None
) -> tuple[list[Dataset], float, NDArray[np.float64]]:
    direction = _direction(datasets[0])
    if any(not np.allclose(_direction(ds), direction, atol=_ORIENTATION_TOL) for ds in datasets):
        raise SeriesError(series_uid, "slices have different Image Orientation (Patient)")
    positions = [float(np.dot(direction[2], _position(ds))) for ds in datasets]
    order = np.argsort(positions, kind="stable")
    ordered = [datasets[i] for i in order]
    distances = np.diff(np.sort(positions))
    return ordered, _uniform_spacing(distances, ordered[0], series_uid), direction


def _position(ds: Dataset) -> NDArray[np.float64]:
    return np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)


def _uniform_spacing(distances: NDArray[np.float64], first: Dataset, series_uid: str | None) -> float:
    """One slice spacing for the whole volume; duplicates and gaps are refused, not silently warped."""
    if distances.size == 0:
        return _thickness(first)
    if np.any(distances < 1e-4):
        raise SeriesError(series_uid, "two slices share the same position")
    median = float(np.median(distances))
    if np.any(np.abs(distances - median) > _SPACING_REL_TOL * median):
        raise SeriesError(
            series_uid, f"non-uniform slice spacing ({distances.min():.3f}-{distances.max():.3f} mm)"
        )
    return median


def _sort_by_instance_number(datasets: list[Dataset]) -> list[Dataset]:
    return sorted(datasets, key=lambda ds: int(ds.get("InstanceNumber", 0) or 0))


def _thickness(ds: Dataset) -> float:
    value = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    return float(value) if value else 1.0


def _pixel_spacing(ds: Dataset) -> tuple[float, float, bool]:
    """Pixel Spacing, else Imager Pixel Spacing (projection radiography), else 1 mm flagged as unknown."""
    value = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if not value:
        return 1.0, 1.0, False
    return float(value[0]), float(value[1]), True


def _origin(ds: Dataset) -> tuple[float, float, float]:
    if "ImagePositionPatient" not in ds:
        return (0.0, 0.0, 0.0)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    return (x, y, z)


def _slice_values(ds: Dataset) -> NDArray[np.float32]:
    """Stored values -> modality units; MONOCHROME1 is inverted so higher always means denser."""
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    values = rescale_to_hu(ds.pixel_array, slope, intercept)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        values = (values.max() + values.min() - values).astype(np.float32)
    return values
