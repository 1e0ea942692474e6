"""Precise exceptions for the datasets package.

Every error carries the fields a caller needs to report it (the path, the series, the key), so a
CLI can print a clear message without parsing strings.
"""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """Base class: anything that makes a data set unusable for training."""


class EmptyDatasetError(DatasetError):
    """A data source yielded no items; training on it would silently do nothing."""

    def __init__(self, source: str | Path) -> None:
        self.source = str(source)
        super().__init__(f"no items found in {self.source}")


class LabelsFileError(DatasetError):
    """A labels CSV is missing, has no header we understand, or a malformed row."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingSeriesError(DatasetError):
    """A labels CSV names series that are not in the DICOM folder."""

    def __init__(self, missing: list[str], folder: str | Path) -> None:
        self.missing = list(missing)
        self.folder = str(folder)
        shown = ", ".join(self.missing[:5]) + (" ..." if len(self.missing) > 5 else "")
        super().__init__(f"{len(self.missing)} labelled series not found in {self.folder}: {shown}")


class InvalidSeriesError(DatasetError):
    """A DICOM series cannot be stacked into a volume (mixed sizes, missing geometry)."""

    def __init__(self, series_uid: str, reason: str) -> None:
        self.series_uid = series_uid
        self.reason = reason
        super().__init__(f"series {series_uid}: {reason}")


class NpzFormatError(DatasetError):
    """A MedMNIST-style .npz file lacks required keys or has inconsistent shapes."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class AnnotationError(DatasetError):
    """A GeoJSON annotation file is not a FeatureCollection of (multi)polygons we can use."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ManifestError(DatasetError):
    """A training manifest is unreadable or fails schema validation."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsafeManifestPathError(ManifestError):
    """A manifest path is absolute or escapes the export folder (e.g. ``../``)."""

    def __init__(self, folder: str | Path, item_path: str) -> None:
        self.item_path = item_path
        super().__init__(folder, f"path {item_path!r} is not inside the manifest folder")


class MissingManifestFileError(ManifestError):
    """A manifest names a file that is not in the export folder."""

    def __init__(self, folder: str | Path, item_path: str) -> None:
        self.item_path = item_path
        super().__init__(folder, f"file {item_path!r} does not exist")
