"""ModelCard schema: valid cards load, inconsistent ones fail with the file named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from models.card import DecisionThresholds, ModelCard, Task, dump_card, load_card
from models.errors import CardValidationError

DataFactory = Callable[..., dict[str, Any]]


def test_card_defaults_and_key(make_card_data: DataFactory) -> None:
    card = ModelCard.model_validate(make_card_data())
    assert card.key == "chest-ct-nodule@1.0.0"
    assert card.task is Task.CLASSIFICATION
    assert card.not_for_clinical_use is True
    assert card.input.window is not None
    assert card.input.window.bounds == (-1350.0, 150.0)
    assert card.thresholds_for("nodule").critical == 0.9
    assert card.code_for("nodule").scheme == "99HOICHAN"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"labels": []}, "labels"),
        ({"labels": ["a", "a"]}, "unique"),
        ({"thresholds": {"other": {"report": 0.5}}}, "unknown labels"),
        ({"input": {"spatial_dims": 3, "patch_size": [64, 64]}}, "patch_size"),
        ({"input": {"spatial_dims": 2, "patch_size": [8, 8], "normalization": "mean_std"}}, "mean and std"),
        ({"task": "slide-classification"}, "mpp"),
        ({"onnx_sha256": "xyz"}, "onnx_sha256"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_invalid_cards_are_refused(
    make_card_data: DataFactory, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(make_card_data(**overrides))


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="report <= urgent <= critical"):
        DecisionThresholds(report=0.8, urgent=0.5)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_dump_and_load_round_trip(tmp_path: Path, make_card_data: DataFactory, suffix: str) -> None:
    card = ModelCard.model_validate(make_card_data())
    path = tmp_path / f"card{suffix}"
    dump_card(card, path)
    assert load_card(path) == card


def test_bad_card_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text('{"name": "x"}')
    with pytest.raises(CardValidationError) as info:
        load_card(path)
    assert info.value.path == path
    path.write_text("{not json")
    with pytest.raises(CardValidationError):
        load_card(path)
