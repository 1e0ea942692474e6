"""Files that are not slides are refused with the reason (4xx) and leave nothing behind: no slide
row, no blob, no serving folder, no upload."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.config import Settings
from consult_api.slides import archives
from consult_api.slides.errors import UnsafeArchive
from consult_api.slides.models import Slide
from tests.conftest import Actors
from tests.consult_api.slides.conftest import tus_upload, upload_slide
from tests.consult_api.slides.synthetic import write_flat_tiff


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()] if folder.exists() else []


def assert_nothing_left(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Slide)) == 0
    assert _files_under(settings.data_dir / "uploads") == []
    assert _files_under(settings.data_dir / "slides") == []
    assert [p for p in _files_under(settings.blob_dir) if p.parent.name != "tmp"] == []


def _refused(client: TestClient, as_: Actors, case_id: str, data: bytes, filename: str) -> str:
    response = tus_upload(client, as_["ref_d1"], data, case_id, filename)
    assert response.status_code == 422, response.text
    assert response.headers["Tus-Resumable"] == "1.0.0"
    detail: str = response.json()["detail"]
    return detail


def test_tiff_that_is_not_a_slide(
    client: TestClient,
    as_: Actors,
    pathology_case: str,
    tmp_path: Path,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    data = write_flat_tiff(tmp_path / "photo.tif").read_bytes()
    assert "does not recognise" in _refused(client, as_, pathology_case, data, "photo.tif")
    assert_nothing_left(settings, session_factory)


def test_truncated_svs(
    client: TestClient,
    as_: Actors,
    pathology_case: str,
    svs_path: Path,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    data = svs_path.read_bytes()
    detail = _refused(client, as_, pathology_case, data[: len(data) * 2 // 3], "cut.svs")
    assert "not a readable whole-slide image" in detail
    assert_nothing_left(settings, session_factory)


def test_unknown_format(
    client: TestClient,
    as_: Actors,
    pathology_case: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    detail = _refused(client, as_, pathology_case, b"%PDF-1.7 definitely not a slide\n" * 100, "report.pdf")
    assert "does not recognise" in detail
    assert_nothing_left(settings, session_factory)


@pytest.mark.parametrize("name", ["../escape.svs", "/etc/cron.d/evil", "a/../../b.dcm", "nested/inner.zip"])
def test_zip_with_unsafe_names(
    client: TestClient,
    as_: Actors,
    pathology_case: str,
    tmp_path: Path,
    settings: Settings,
    session_factory: sessionmaker[Session],
    name: str,
) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("slide/readme.txt", "hello")
        out.writestr(name, b"x" * 100)
    response = tus_upload(client, as_["ref_d1"], archive.read_bytes(), pathology_case, "bad.zip")
    assert response.status_code == 422, response.text
    assert response.json()["title"] == "Unsafe archive"
    assert not (tmp_path / "escape.svs").exists()
    assert_nothing_left(settings, session_factory)


def test_zip_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("slide/level0.dcm", b"\0" * (64 * 1024 * 1024))
    with pytest.raises(UnsafeArchive, match="expands"):
        archives.unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tile_out_of_range(client: TestClient, as_: Actors, pathology_case: str, svs_path: Path) -> None:
    slide = upload_slide(client, as_["ref_d1"], svs_path, pathology_case)
    headers = as_["path_c1"]
    base = f"/api/v1/slides/{slide['id']}"
    for path in ("_files/99/0_0.jpeg", "_files/12/500_0.jpeg", "_files/0/0_1.jpeg"):
        response = client.get(base + path, headers=headers)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["title"] == "Tile out of range"
    assert client.get(base + "_files/12/0_0.png", headers=headers).status_code == 404
    response = client.get(base + "/region?x=999999&y=0&width=10&height=10", headers=headers)
    assert response.status_code == 404
    assert client.get(base + "/region?x=0&y=0&width=99999&height=10", headers=headers).status_code == 422
