"""Training manifests: the de-identified export of specialist-confirmed findings.

The service (which owns the database) writes a folder: files plus ``manifest.json`` described by
the pydantic models below, using ``write_manifest``; training reads it with ``read_manifest``,
never the database. The reader refuses paths that are absolute or climb out of the folder
(``../``) and names that point at missing files, so a tampered or half-copied export fails
loudly before training starts.

Provenance is pseudonymous: case and reviewer ids are export-time pseudonyms, never database
keys or names. ``proposed_by`` names the model version that proposed the finding (absent when a
specialist drew it from scratch); ``decision`` says whether the specialist accepted it as is or
amended it (label or geometry changed).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datasets.errors import ManifestError, MissingManifestFileError, UnsafeManifestPathError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION: Literal[1] = 1

ItemKind = Literal["dicom_series", "slide"]
Decision = Literal["accepted", "amended"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Frozen):
    """The model version that proposed a finding."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)


class Provenance(_Frozen):
    """Where a confirmed finding came from, pseudonymised for export."""

    case_pseudo_id: str = Field(min_length=1)
    reviewer_pseudo_id: str = Field(min_length=1)
    proposed_by: ModelRef | None = None
    decision: Decision
    original_label: str | None = None  # the model's label when the specialist amended it


class ManifestItem(_Frozen):
    """One training item: its files (relative POSIX paths), labels, optional mask or geometry."""

    id: str = Field(min_length=1)
    kind: ItemKind
    files: tuple[str, ...] = Field(min_length=1)
    labels: tuple[str, ...] = Field(min_length=1)
    mask: str | None = None  # e.g. a DICOM SEG or .npy lesion mask, relative path
    geometry: dict[str, Any] | None = None  # GeoJSON geometry in level-0 pixels (slides)
    provenance: Provenance

    @field_validator("files")
    @classmethod
    def _files_are_relative(cls, files: tuple[str, ...]) -> tuple[str, ...]:
        for f in files:
            _check_relative(f)
        return files

    @field_validator("mask")
    @classmethod
    def _mask_is_relative(cls, mask: str | None) -> str | None:
        if mask is not None:
            _check_relative(mask)
        return mask

    def paths(self) -> tuple[str, ...]:
        """Every file this item needs (files and mask)."""
        return self.files + ((self.mask,) if self.mask else ())


class Manifest(_Frozen):
    """The whole export."""

    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: dt.datetime
    source: str = "hoichan"
    items: tuple[ManifestItem, ...] = ()

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        return value


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically into ``folder`` after checking every file is there."""
    folder = Path(folder)
    _check_files(folder, manifest)
    target = folder / MANIFEST_NAME
    payload = manifest.model_dump_json(indent=2)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".manifest-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(payload)
    Path(tmp).replace(target)
    return target


def read_manifest(folder: str | Path) -> Manifest:
    """Parse and validate ``folder/manifest.json``; every path must exist inside ``folder``."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(path, "manifest.json not found") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(path, f"unreadable ({exc})") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        unsafe = _unsafe_path_in(exc)
        if unsafe is not None:
            raise UnsafeManifestPathError(folder, unsafe) from exc
        raise ManifestError(path, f"schema validation failed: {exc}") from exc
    _check_files(folder, manifest)
    return manifest


def resolve(folder: str | Path, relative: str) -> Path:
    """Absolute path of a manifest entry, refusing anything outside ``folder``."""
    root = Path(folder).resolve()
    _check_relative_or_raise(folder, relative)
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise UnsafeManifestPathError(folder, relative)  # e.g. a symlink pointing out
    return target


def _check_files(folder: Path, manifest: Manifest) -> None:
    for item in manifest.items:
        for relative in item.paths():
            if not resolve(folder, relative).is_file():
                raise MissingManifestFileError(folder, relative)


class _UnsafePathValueError(ValueError):
    """Raised inside validators; carries the offending path to the reader."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"unsafe path {path!r}: must be relative, POSIX, without '..'")


def _check_relative(path: str) -> None:
    pure = PurePosixPath(path)
    if not path or "\\" in path or pure.is_absolute() or ".." in pure.parts or ":" in pure.parts[0]:
        raise _UnsafePathValueError(path)


def _check_relative_or_raise(folder: str | Path, path: str) -> None:
    try:
        _check_relative(path)
    except _UnsafePathValueError as exc:
        raise UnsafeManifestPathError(folder, path) from exc


def _unsafe_path_in(exc: ValidationError) -> str | None:
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, _UnsafePathValueError):
            return cause.path
    return None
