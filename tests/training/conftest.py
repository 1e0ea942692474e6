"""Fixtures for training tests: tiny recipes (seconds to train) written as YAML, and a registry."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.registry import ModelRegistry

TINY_DENSENET = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]}

TILE_RECIPE: dict[str, Any] = {
    "kind": "tile-classification",
    "architecture": {"name": "densenet121-2d", "overrides": TINY_DENSENET},
    "data": {"source": "synthetic-he-tiles", "n_train": 128, "n_val": 48, "seed": 3},
    "input": {"spatial_dims": 2, "channels": 3, "patch_size": [32, 32], "mpp": 1.0},
    "card": {
        "name": "test-tiles",
        "version": "0.0.1",
        "labels": ["tumour"],
        "serves": {"stains": ["H&E"]},
        "thresholds": {"tumour": {"report": 0.5}},
        "intended_use": "test model",
    },
    "optimizer": {"name": "adamw", "lr": 0.01},
    "epochs": 3,
    "batch_size": 32,
    "seed": 5,
    "early_stopping": {"patience": 4},
}

SEG_RECIPE: dict[str, Any] = {
    "kind": "segmentation-3d",
    "architecture": {
        "name": "unet-3d",
        "overrides": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
    },
    "data": {
        "source": "synthetic-ct",
        "n_train": 3,
        "n_val": 2,
        "shape": [16, 32, 32],
        "n_lesions": [1, 2],
        "lesion_radius_mm": [15.0, 25.0],
        "seed": 4,
    },
    "input": {
        "spatial_dims": 3,
        "patch_size": [8, 32, 32],
        "window": {"center": 20, "width": 500},
    },
    "card": {"name": "test-seg", "version": "0.0.1", "labels": ["lesion"]},
    "epochs": 1,
    "batch_size": 2,
    "steps_per_epoch": 2,
}


@pytest.fixture
def tile_recipe() -> dict[str, Any]:
    return copy.deepcopy(TILE_RECIPE)


@pytest.fixture
def seg_recipe() -> dict[str, Any]:
    return copy.deepcopy(SEG_RECIPE)


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[[dict[str, Any], str], Path]:
    def write(data: dict[str, Any], name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


@pytest.fixture(scope="session")
def tile_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One tiny tile-classifier training run (a few seconds), shared by the tests that read its outputs."""
    from training.recipe import parse_recipe
    from training.train import train

    root = tmp_path_factory.mktemp("tile-run")
    registry = ModelRegistry(root / "registry")
    return train(parse_recipe(copy.deepcopy(TILE_RECIPE)), root / "out", registry)
