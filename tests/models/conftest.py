"""Fixtures for the model registry tests: card data and a fake ONNX file (the registry only hashes it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.card import ModelCard


def card_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "chest-ct-nodule",
        "version": "1.0.0",
        "task": "classification",
        "serves": {"modalities": ["CT"], "body_parts": ["CHEST"]},
        "input": {"spatial_dims": 2, "patch_size": [64, 64], "window": {"center": -600, "width": 1500}},
        "labels": ["nodule"],
        "thresholds": {"nodule": {"report": 0.5, "urgent": 0.7, "critical": 0.9}},
        "metrics": {"auroc": 0.91},
        "intended_use": "triage of referred chest CT",
    }
    data.update(overrides)
    return data


@pytest.fixture
def make_card_data() -> Callable[..., dict[str, Any]]:
    return card_data


@pytest.fixture
def make_model_card() -> Callable[..., ModelCard]:
    return lambda **kw: ModelCard.model_validate(card_data(**kw))


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx, the registry only hashes bytes")
    return path


@pytest.fixture
def card_file(tmp_path: Path) -> Path:
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card_data()))
    return path
