"""Recipes: the shipped ones load, and bad ones fail with a clear, typed error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from training.errors import ArchitectureMismatchError, RecipeError, UnknownArchitectureError
from training.recipe import DicomFolderSource, load_data_spec, load_recipe, parse_recipe

RECIPES = sorted((Path(__file__).parents[2] / "training" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_load_and_are_demo_models(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.card.name == path.stem
    assert recipe.card.not_for_clinical_use
    assert "not for clinical use" in recipe.card.intended_use.lower()


def test_three_recipes_cover_the_three_kinds() -> None:
    assert {load_recipe(p).kind for p in RECIPES} == {
        "classification-2d",
        "segmentation-3d",
        "tile-classification",
    }


def test_unknown_architecture_is_named(tile_recipe: dict[str, Any]) -> None:
    tile_recipe["architecture"]["name"] = "resnet-9000"
    with pytest.raises(UnknownArchitectureError) as info:
        parse_recipe(tile_recipe)
    assert info.value.name == "resnet-9000"
    assert "unet-3d" in str(info.value)


def test_architecture_must_fit_the_kind(seg_recipe: dict[str, Any]) -> None:
    seg_recipe["architecture"] = {"name": "densenet121-2d"}
    with pytest.raises(ArchitectureMismatchError, match="2D"):
        parse_recipe(seg_recipe)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("epochs",), 0),
        (("data", "source"), "synthetic-mri"),
        (("input", "spatial_dims"), 3),
        (("card", "name"), "Not A Valid Name"),
        (("card", "labels"), ["a", "b"]),
        (("optimizer", "lr"), -1.0),
    ],
)
def test_bad_recipe_values_raise_recipe_error(
    tile_recipe: dict[str, Any], path: tuple[str, ...], value: Any
) -> None:
    target = tile_recipe
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(RecipeError):
        parse_recipe(tile_recipe)


def test_unknown_field_is_refused(tile_recipe: dict[str, Any]) -> None:
    tile_recipe["learning_rate"] = 0.1
    with pytest.raises(RecipeError, match="learning_rate"):
        parse_recipe(tile_recipe)


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match=r"broken\.yaml"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="missing"):
        load_recipe(tmp_path / "missing.yaml")


def test_relative_paths_resolve_against_the_yaml(write_yaml: Callable[..., Path], tmp_path: Path) -> None:
    path = write_yaml(
        {"data": {"source": "dicom-folder", "root": "series", "labels_csv": "labels.csv"}}, "d.yaml"
    )
    spec = load_data_spec(path)
    assert isinstance(spec, DicomFolderSource)
    assert spec.root == tmp_path / "series"
    assert spec.labels_csv == tmp_path / "labels.csv"
