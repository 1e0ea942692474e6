"""Training manifest: round trip, and refusal of unsafe paths and missing files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from datasets.errors import ManifestError, MissingManifestFileError, UnsafeManifestPathError
from datasets.manifest import (
    Manifest,
    ManifestItem,
    ModelRef,
    Provenance,
    read_manifest,
    write_manifest,
)


def _manifest(files: tuple[str, ...] = ("case1/slide.tiff",)) -> Manifest:
    item = ManifestItem(
        id="f1",
        kind="slide",
        files=files,
        labels=("tumour",),
        geometry={"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]},
        provenance=Provenance(
            case_pseudo_id="case-7f3a",
            reviewer_pseudo_id="rev-19",
            proposed_by=ModelRef(name="wsi-tumour", version="1.2.0"),
            decision="amended",
            original_label="normal",
        ),
    )
    return Manifest(created_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), items=(item,))


def _export(tmp_path: Path) -> Path:
    (tmp_path / "case1").mkdir(parents=True)
    (tmp_path / "case1" / "slide.tiff").write_bytes(b"x")
    return tmp_path


def test_round_trip(tmp_path: Path) -> None:
    folder = _export(tmp_path)
    write_manifest(folder, _manifest())
    assert read_manifest(folder) == _manifest()
    assert json.loads((folder / "manifest.json").read_text())["schema_version"] == 1


@pytest.mark.parametrize("bad", ["../secret.dcm", "case1/../../x", "/etc/passwd", "C:/x", "a\\..\\b"])
def test_unsafe_paths_are_rejected_on_read(tmp_path: Path, bad: str) -> None:
    folder = _export(tmp_path)
    write_manifest(folder, _manifest())
    raw = json.loads((folder / "manifest.json").read_text())
    raw["items"][0]["files"] = [bad]
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(UnsafeManifestPathError):
        read_manifest(folder)


def test_unsafe_paths_are_rejected_when_building() -> None:
    with pytest.raises(ValidationError):
        _manifest(files=("../x",))


def test_symlink_escaping_the_folder_is_rejected(tmp_path: Path) -> None:
    folder = _export(tmp_path / "export")
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(b"x")
    (folder / "link.dcm").symlink_to(outside)
    with pytest.raises(UnsafeManifestPathError):
        write_manifest(folder, _manifest(files=("link.dcm",)))


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    folder = _export(tmp_path)
    with pytest.raises(MissingManifestFileError):
        write_manifest(folder, _manifest(files=("case1/absent.tiff",)))
    write_manifest(folder, _manifest())
    (folder / "case1" / "slide.tiff").unlink()
    with pytest.raises(MissingManifestFileError):
        read_manifest(folder)


def test_bad_schema_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps({"schema_version": 99, "created_at": "2026-01-01T00:00:00Z"})
    )
    with pytest.raises(ManifestError, match="schema"):
        read_manifest(tmp_path)


def test_naive_timestamp_rejected() -> None:
    with pytest.raises(ValidationError):
        Manifest(created_at=dt.datetime(2026, 1, 1))
