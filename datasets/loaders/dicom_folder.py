"""A folder of DICOM series plus a labels CSV -> labelled series items.

The folder layout is free (any depth, any file names): files are grouped by SeriesInstanceUID
from their headers (read without pixels), and instances are sorted along the slice normal, so
the same code reads a PACS export, our synthetic writer or a vendor CD.

The CSV needs a header. The series is named by a ``series_uid`` column (also accepted:
``series_instance_uid``, ``SeriesInstanceUID``) or by a ``path`` column (a sub-folder holding
exactly one series); the label is the ``label`` column by default; every other column is kept
in ``item.columns``. A CSV naming series that are not in the folder is an error, not a skip:
silently training on fewer cases hides data problems.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from datasets.errors import (
    EmptyDatasetError,
    InvalidSeriesError,
    LabelsFileError,
    MissingSeriesError,
)

SERIES_COLUMNS = ("series_uid", "series_instance_uid", "SeriesInstanceUID")


@dataclass(frozen=True)
class DicomInstanceRef:
    """Header facts needed to group and sort one instance."""

    path: Path
    series_uid: str
    study_uid: str
    modality: str
    sort_key: float


@dataclass(frozen=True)
class DicomSeriesItem:
    """One labelled series; pixels are read only by ``load_volume``."""

    series_uid: str
    study_uid: str
    modality: str
    paths: tuple[Path, ...]  # sorted along the slice normal (ascending)
    label: str
    columns: dict[str, str] = field(default_factory=dict)

    def load_volume(self) -> tuple[np.ndarray, tuple[float, float, float]]:
        """``(volume float32 (z, y, x) in rescaled units (HU for CT), spacing (dz, dy, dx) mm)``."""
        datasets = [pydicom.dcmread(p) for p in self.paths]
        shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
        if len(shapes) != 1:
            raise InvalidSeriesError(self.series_uid, f"instances have different sizes {sorted(shapes)}")
        volume = np.stack([_rescaled(ds) for ds in datasets])
        return volume, _spacing(datasets)


def scan_dicom_folder(root: str | Path) -> dict[str, list[DicomInstanceRef]]:
    """Group every DICOM file under ``root`` by series, each list sorted along the slice normal."""
    series: dict[str, list[DicomInstanceRef]] = defaultdict(list)
    for path in sorted(Path(root).rglob("*")):
        ref = _read_ref(path) if path.is_file() else None
        if ref is not None:
            series[ref.series_uid].append(ref)
    for refs in series.values():
        refs.sort(key=lambda r: (r.sort_key, r.path.name))
    return dict(series)


def load_dicom_folder(
    root: str | Path,
    labels_csv: str | Path,
    *,
    label_column: str = "label",
) -> list[DicomSeriesItem]:
    """Items for every CSV row, in CSV order; raises if a named series is absent."""
    root = Path(root)
    rows = _read_labels(Path(labels_csv), label_column)
    if not rows:
        raise EmptyDatasetError(labels_csv)
    scanned = scan_dicom_folder(root)
    items, missing = [], []
    for row in rows:
        refs = _refs_for_row(root, row, scanned)
        if refs is None:
            missing.append(_row_key(row))
            continue
        items.append(_item(refs, row, label_column))
    if missing:
        raise MissingSeriesError(missing, root)
    return items


def _refs_for_row(
    root: Path, row: dict[str, str], scanned: dict[str, list[DicomInstanceRef]]
) -> list[DicomInstanceRef] | None:
    uid = next((row[c] for c in SERIES_COLUMNS if row.get(c)), None)
    if uid is not None:
        return scanned.get(uid.strip())
    folder = (root / row["path"]).resolve()
    if not folder.is_relative_to(root.resolve()):
        return None
    found = [refs for refs in scanned.values() if all(r.path.resolve().is_relative_to(folder) for r in refs)]
    return found[0] if len(found) == 1 else None


def _item(refs: list[DicomInstanceRef], row: dict[str, str], label_column: str) -> DicomSeriesItem:
    first = refs[0]
    extra = {k: v for k, v in row.items() if k != label_column}
    return DicomSeriesItem(
        series_uid=first.series_uid,
        study_uid=first.study_uid,
        modality=first.modality,
        paths=tuple(r.path for r in refs),
        label=row[label_column].strip(),
        columns=extra,
    )


def _read_labels(path: Path, label_column: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise LabelsFileError(path, "file not found")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        _check_header(path, header, label_column)
        rows = [dict(r) for r in reader if any((v or "").strip() for v in r.values())]
    for n, row in enumerate(rows, start=2):
        if not (row.get(label_column) or "").strip() or not _row_key(row):
            raise LabelsFileError(path, f"line {n}: empty series or label")
    return rows


def _check_header(path: Path, header: Iterable[str], label_column: str) -> None:
    names = set(header)
    if label_column not in names:
        raise LabelsFileError(path, f"no {label_column!r} column (header: {sorted(names)})")
    if not names & {*SERIES_COLUMNS, "path"}:
        raise LabelsFileError(path, f"needs one of {[*SERIES_COLUMNS, 'path']} columns")


def _row_key(row: dict[str, str]) -> str:
    for column in (*SERIES_COLUMNS, "path"):
        if (row.get(column) or "").strip():
            return row[column].strip()
    return ""


def _read_ref(path: Path) -> DicomInstanceRef | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError):
        return None
    if "SeriesInstanceUID" not in ds:
        return None
    return DicomInstanceRef(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        modality=str(ds.get("Modality", "")),
        sort_key=_position_along_normal(ds),
    )


def _position_along_normal(ds: pydicom.Dataset) -> float:
    """Distance along the slice normal; falls back to InstanceNumber for projection images."""
    if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        iop = np.asarray(ds.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        return float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float)))
    return float(ds.get("InstanceNumber", 0) or 0)


def _rescaled(ds: pydicom.Dataset) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return (ds.pixel_array.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def _spacing(datasets: Sequence[pydicom.Dataset]) -> tuple[float, float, float]:
    first = datasets[0]
    dy, dx = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    positions = [_position_along_normal(ds) for ds in datasets]
    if len(positions) > 1:
        dz = float(np.median(np.diff(positions)))
    else:
        dz = float(first.get("SliceThickness", 1.0) or 1.0)
    return dz, dy, dx
