"""Whole-slide triage as named stages.

    open_slide -> slide_tissue_mask -> plan_tiles -> score_tiles (reader threads + network)
               -> aggregate -> heatmap + top tiles -> findings

``run_slide_triage`` chains them; the network is any ``numpy -> numpy``
callable taking (N, 3, H, W) float32 tiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openslide
from numpy.typing import NDArray

from inference.errors import EmptySlideError, InputSpecError
from inference.postprocessing import aggregate, label_channels
from inference.preprocessing import tiles_to_batch
from inference.results import BoundingBox, Finding, SlideTriageResult, TileScore, priority_for
from inference.wsi import (
    TileGrid,
    TileReader,
    TissueSpace,
    iter_tile_batches,
    open_slide,
    plan_tiles,
    slide_mpp,
    slide_name,
    slide_tissue_mask,
)
from models.card import ModelCard, Task

Network = Callable[[NDArray[np.float32]], NDArray[np.float32]]


def check_slide_spec(card: ModelCard, mpp: float | None) -> float:
    """The slide must state its resolution and the card must be a slide model."""
    if card.task is not Task.SLIDE_CLASSIFICATION or card.input.mpp is None:
        raise InputSpecError(card.key, "task", Task.SLIDE_CLASSIFICATION.value, card.task.value)
    if card.input.channels != 3:
        raise InputSpecError(card.key, "channels", 3, card.input.channels)
    if len(set(card.input.patch_size)) != 1:
        raise InputSpecError(card.key, "patch_size", "square tiles", card.input.patch_size)
    if mpp is None:
        raise InputSpecError(card.key, "slide mpp", card.input.mpp, None)
    return mpp


def score_tiles(
    slide: openslide.AbstractSlide,
    grid: TileGrid,
    card: ModelCard,
    network: Network,
    batch_size: int,
    readers: int,
) -> NDArray[np.float32]:
    """(tiles, labels) scores in grid-tile order; reads overlap with inference."""
    reader = TileReader(slide, grid)
    scores = []
    for _, pixels in iter_tile_batches(reader, grid.tiles, batch_size, readers):
        raw = np.asarray(network(tiles_to_batch(pixels, card.input)), dtype=np.float32)
        scores.append(label_channels(raw.reshape(raw.shape[0], -1), card))
    return np.concatenate(scores, axis=0)


def heatmap_from_scores(
    grid: TileGrid, scores: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """(labels, rows, cols) heatmap aligned to level 0 at ``grid.tile_size_level0`` per cell."""
    heatmap = np.zeros((scores.shape[1], grid.rows, grid.cols), dtype=np.float32)
    scored = np.zeros((grid.rows, grid.cols), dtype=bool)
    rows = np.array([t.row for t in grid.tiles], dtype=int)
    cols = np.array([t.col for t in grid.tiles], dtype=int)
    heatmap[:, rows, cols] = scores.T
    scored[rows, cols] = True
    return heatmap, scored


def top_tiles(
    grid: TileGrid, scores: NDArray[np.float32], card: ModelCard, dimensions: tuple[int, int]
) -> list[TileScore]:
    """The ``top_k`` highest-scoring tiles per label, for the reviewer to look at first."""
    out = []
    for index, label in enumerate(card.labels):
        order = np.argsort(-scores[:, index], kind="stable")[: card.output.top_k]
        out += [_tile_score(grid, int(i), label, float(scores[i, index]), dimensions) for i in order]
    return out


def _tile_score(
    grid: TileGrid, index: int, label: str, score: float, dimensions: tuple[int, int]
) -> TileScore:
    tile = grid.tiles[index]
    size = round(grid.tile_size_level0)
    bbox = BoundingBox(tile.x, tile.y, min(size, dimensions[0] - tile.x), min(size, dimensions[1] - tile.y))
    return TileScore(label=label, score=score, col=tile.col, row=tile.row, bbox=bbox)


def slide_findings(
    card: ModelCard, name: str, scores: dict[str, float], tops: list[TileScore], heatmap: NDArray[np.float32]
) -> list[Finding]:
    """A finding per label whose slide score reaches its report threshold, boxed on its best tile."""
    findings = []
    for index, label in enumerate(card.labels):
        score = scores[label]
        if score < card.thresholds_for(label).report:
            continue
        best = next(t for t in tops if t.label == label)
        findings.append(
            Finding(
                label=label,
                score=score,
                priority=priority_for(score, card.thresholds_for(label)),
                model_name=card.name,
                model_version=card.version,
                series_instance_uid=None,
                bbox=best.bbox,
                heatmap=heatmap[index],
            )
        )
    return findings


def run_slide_triage(
    slide: str | Path | openslide.AbstractSlide,
    card: ModelCard,
    network: Network,
    batch_size: int = 16,
    readers: int = 4,
    thumbnail_size: int = 1024,
    tissue_space: TissueSpace = TissueSpace.HED,
    mpp_override: float | None = None,
) -> SlideTriageResult:
    """A whole slide -> slide scores, findings, a heatmap aligned to level 0 and the top tiles."""
    name = slide_name(slide)
    handle = open_slide(slide) if isinstance(slide, str | Path) else slide
    try:
        return _triage(
            handle, name, card, network, batch_size, readers, thumbnail_size, tissue_space, mpp_override
        )
    finally:
        if handle is not slide:
            handle.close()


def _triage(
    slide: openslide.AbstractSlide,
    name: str,
    card: ModelCard,
    network: Network,
    batch_size: int,
    readers: int,
    thumbnail_size: int,
    tissue_space: TissueSpace,
    mpp_override: float | None,
) -> SlideTriageResult:
    timings: dict[str, float] = {}
    mpp = check_slide_spec(card, mpp_override or slide_mpp(slide))
    start = time.perf_counter()
    mask = slide_tissue_mask(slide, thumbnail_size, tissue_space, name)
    timings["tissue"] = time.perf_counter() - start
    model_mpp = float(card.input.mpp or mpp)
    grid = plan_tiles(
        dimensions=slide.dimensions,
        level_downsamples=slide.level_downsamples,
        slide_mpp_value=mpp,
        model_mpp=model_mpp,
        tile_size=card.input.patch_size[0],
        mask=mask,
        min_tissue_fraction=card.input.min_tissue_fraction,
        model=card.key,
    )
    if not grid.tiles:
        raise EmptySlideError(name, f"no tile has >= {card.input.min_tissue_fraction:.0%} tissue")
    start = time.perf_counter()
    scores = score_tiles(slide, grid, card, network, batch_size, readers)
    timings["tiles"] = time.perf_counter() - start
    slide_scores = {
        label: aggregate(scores[:, i], card.output.aggregation, card.output.top_k)
        for i, label in enumerate(card.labels)
    }
    heatmap, scored = heatmap_from_scores(grid, scores)
    tops = top_tiles(grid, scores, card, slide.dimensions)
    return SlideTriageResult(
        model_name=card.name,
        model_version=card.version,
        slide=name,
        dimensions=slide.dimensions,
        slide_mpp=mpp,
        model_mpp=model_mpp,
        tile_size_level0=grid.tile_size_level0,
        tiles_total=grid.cols * grid.rows,
        tiles_scored=len(grid.tiles),
        scores=slide_scores,
        findings=slide_findings(card, name, slide_scores, tops, heatmap),
        top_tiles=tops,
        heatmap=heatmap,
        tissue_grid=scored,
        timings=timings,
    )
