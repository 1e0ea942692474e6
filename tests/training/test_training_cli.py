"""``hoichan train`` / ``hoichan evaluate`` through the argparse wiring, in-process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.registry import ModelRegistry
from training.cli import add_training_commands
from training.train import TrainingResult


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hoichan")
    add_training_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


def test_train_command(
    tile_recipe: dict[str, Any],
    write_yaml: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tile_recipe.update(epochs=1)
    tile_recipe["data"].update(n_train=32, n_val=16)
    recipe = write_yaml(tile_recipe)
    code = _run(["train", str(recipe), "--registry", str(tmp_path / "reg"), "--out", str(tmp_path / "out")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "test-tiles@0.0.1"
    assert summary["state"] == "candidate"
    assert ModelRegistry(tmp_path / "reg").get("test-tiles", "0.0.1").card.metrics == summary["metrics"]


def test_evaluate_command(
    tile_run: TrainingResult,
    write_yaml: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert tile_run.registered is not None
    registry = tile_run.registered.directory.parents[1]
    data = write_yaml(
        {"data": {"source": "synthetic-he-tiles", "n_train": 1, "n_val": 40, "seed": 99}}, "d.yaml"
    )
    argv = [
        "evaluate",
        "test-tiles@0.0.1",
        str(data),
        "--registry",
        str(registry),
        "--out",
        str(tmp_path / "ev"),
    ]
    assert _run(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["n"] == 40
    assert out["metrics"]["auc"] > 0.7
    assert (tmp_path / "ev" / "metrics.json").is_file()
    assert (tmp_path / "ev" / "roc.png").is_file()


def test_bad_recipe_exits_1_with_one_line(
    tile_recipe: dict[str, Any], write_yaml: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tile_recipe["architecture"]["name"] = "nope"
    assert _run(["train", str(write_yaml(tile_recipe))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "unknown architecture 'nope'" in err


def test_evaluate_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["evaluate", "ghost", str(tmp_path), "--registry", str(tmp_path)]) == 1
    assert "ghost" in capsys.readouterr().err


def test_cli_module_does_not_import_torch() -> None:
    """``hoichan --help`` must work on the serving install (no train extra)."""
    code = "import sys, training.cli, training.recipe; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
