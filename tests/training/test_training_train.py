"""A tiny training run that really learns, exports with parity and lands in the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.card import ModelState, Task
from models.registry import ModelRegistry, sha256_file
from training.errors import ExportParityError
from training.export import check_parity
from training.recipe import parse_recipe
from training.train import TrainingResult, build_module, train


def test_tiny_run_learns(tile_run: TrainingResult) -> None:
    """Held-out synthetic tiles, fresh seed stream: AUC well above chance (0.5)."""
    assert tile_run.metrics["val_auc"] >= 0.8
    assert tile_run.metrics["val_n"] == 48
    assert tile_run.fit.best_epoch >= 1


def test_export_parity_and_dynamic_batch(tile_run: TrainingResult) -> None:
    assert tile_run.parity.max_abs_diff < tile_run.parity.tolerance == 1e-4
    assert tile_run.parity.samples > 1  # a batch > 1 went through the exported (dynamic) axis


def test_registered_as_candidate_with_metrics(tile_run: TrainingResult) -> None:
    model = tile_run.registered
    assert model is not None
    assert model.state is ModelState.CANDIDATE
    assert model.card.task is Task.SLIDE_CLASSIFICATION
    assert model.card.metrics == tile_run.metrics
    assert model.card.onnx_sha256 == sha256_file(model.onnx_path) == sha256_file(tile_run.onnx_path)
    assert model.card.architecture == "densenet121-2d"
    assert model.card.not_for_clinical_use


def test_report_folder(tile_run: TrainingResult) -> None:
    folder = tile_run.report_dir
    for name in ("metrics.json", "roc.png", "confusion.png", "history.png", "card.json", "best.pt"):
        assert (folder / name).is_file(), name
    payload = json.loads((folder / "metrics.json").read_text())
    assert payload["heldout_metrics"]["auc"] == pytest.approx(tile_run.metrics["val_auc"], abs=1e-6)
    assert len(payload["history"]) == payload["epochs_run"] >= 1
    assert (folder / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_segmentation_run_exports_3d_with_parity(seg_recipe: dict[str, Any], tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    result = train(parse_recipe(seg_recipe), tmp_path / "out", registry)
    assert result.parity.tolerance == 1e-3
    assert result.parity.max_abs_diff < 1e-3
    assert {"val_dice", "val_dice_mean_per_case"} <= set(result.metrics)
    assert registry.get("test-seg", "0.0.1").card.task is Task.SEGMENTATION


def test_same_seed_same_split_and_init(tile_recipe: dict[str, Any]) -> None:
    """Determinism where it is cheap to check: identical initial weights for one seed."""
    from training.train import seed_everything

    recipe = parse_recipe(tile_recipe)
    seed_everything(recipe.seed, None)
    first = build_module(recipe).state_dict()
    seed_everything(recipe.seed, None)
    second = build_module(recipe).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_parity_failure_is_an_error(tile_run: TrainingResult, tile_recipe: dict[str, Any]) -> None:
    """A module that is not the exported one must fail the parity check."""
    other = build_module(parse_recipe(tile_recipe))
    inputs = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    with pytest.raises(ExportParityError):
        check_parity(other, tile_run.onnx_path, inputs, 1e-4, "test-tiles@0.0.1")
