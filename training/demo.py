"""Rebuild the shipped demo models: train each ``training/recipes/demo-*.yaml`` into ``models/demo/``.

``python -m training.demo`` retrains all three (minutes on two CPU cores) and
writes ``models/demo/<name>/<version>/`` with the card, the ONNX file, the torch
weights (so demo models can be fine-tuned with ``init_from``), the recipe that
produced it and the training report's ``metrics.json``.
``models.demo.install_demo_models`` then registers them; it does not need torch.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from models.demo import DEMO_ROOT
from training.recipe import load_recipe
from training.train import CARD_FILE, ONNX_FILE, WEIGHTS_FILE, TrainingResult, train

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def build_demo_model(recipe_path: Path, dest_root: Path = DEMO_ROOT) -> TrainingResult:
    """Train one recipe and publish it under ``dest_root/<name>/<version>/`` (replacing a previous build)."""
    recipe = load_recipe(recipe_path)
    with tempfile.TemporaryDirectory(prefix="hoichan-demo-") as tmp:
        result = train(recipe, Path(tmp))
        publish(result, recipe_path, dest_root / recipe.card.name / recipe.card.version)
    return result


def publish(result: TrainingResult, recipe_path: Path, dest: Path) -> Path:
    """Copy what a deployment needs (card, ONNX), what fine-tunes it (weights) and what reproduces it."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in (CARD_FILE, ONNX_FILE, WEIGHTS_FILE, "metrics.json"):
        shutil.copyfile(result.report_dir / name, dest / name)
    shutil.copyfile(recipe_path, dest / "recipe.yaml")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("recipes", nargs="*", type=Path, help="default: training/recipes/demo-*.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for path in args.recipes or sorted(RECIPES_DIR.glob("demo-*.yaml")):
        result = build_demo_model(path)
        print(f"{result.card.key}: {result.metrics} in {result.fit.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
