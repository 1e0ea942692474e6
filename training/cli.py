"""``hoichan train RECIPE`` and ``hoichan evaluate MODEL[@VERSION] DATA``.

The main CLI (``consult_api/cli.py``) calls ``add_training_commands``. Nothing
heavy is imported here: torch, MONAI and the training modules load inside the
handlers, so ``hoichan --help`` works on the serving install (no train extra).
Handlers return an exit code and print one line on a known error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from models.errors import ModelRegistryError
from models.registry import ModelRegistry, default_root
from training.errors import TrainingError

Handler = Callable[[argparse.Namespace], int]
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_MISSING_EXTRA = 2
DEFAULT_OUT = Path("var/training")


def add_training_commands(subparsers: argparse._SubParsersAction) -> None:
    """Attach ``train`` and ``evaluate`` to the main CLI's sub-parsers."""
    train = subparsers.add_parser("train", help="train a model from a recipe, export ONNX, register it")
    train.add_argument("recipe", type=Path, help="recipe YAML (see training/recipes/)")
    _common(train)
    train.add_argument("--no-register", action="store_true", help="train and export only")
    _bind(train, _train)
    evaluate = subparsers.add_parser("evaluate", help="score a registered model on a data set")
    evaluate.add_argument("model", help="NAME or NAME@VERSION (default: the active version)")
    evaluate.add_argument("data", type=Path, help="a data-section YAML, or a training manifest folder")
    _common(evaluate)
    _bind(evaluate, _evaluate)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        type=Path,
        default=None,
        help="registry root (default: $HOICHAN_MODELS_DIR or ./var/models)",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"report folder (default: {DEFAULT_OUT}/...)")


def _bind(parser: argparse.ArgumentParser, handler: Handler) -> None:
    """Set ``handler`` (and ``func``, as ``models`` does) so either dispatch convention works."""
    wrapped = _guarded(handler)
    parser.set_defaults(handler=wrapped, func=wrapped)


def _guarded(handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ModuleNotFoundError as exc:
            print(
                f"error: {exc.name} is not installed; install the train extra: pip install 'hoichan[train]'",
                file=sys.stderr,
            )
            return EXIT_MISSING_EXTRA
        except (TrainingError, ModelRegistryError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR

    return run


def _registry(args: argparse.Namespace) -> ModelRegistry:
    return ModelRegistry(args.registry if args.registry is not None else default_root())


def _train(args: argparse.Namespace) -> int:
    from training.recipe import load_recipe
    from training.train import train

    recipe = load_recipe(args.recipe)
    out = args.out or DEFAULT_OUT / recipe.card.name / recipe.card.version
    registry = None if args.no_register else _registry(args)
    result = train(recipe, out, registry)
    summary = {
        "model": result.card.key,
        "parent": result.card.parent,
        "state": result.registered.state.value if result.registered else None,
        "metrics": result.metrics,
        "best_epoch": result.fit.best_epoch,
        "stop_reason": result.fit.stop_reason,
        "train_seconds": round(result.fit.seconds, 1),
        "parity_max_abs_diff": result.parity.max_abs_diff,
        "onnx": str(result.onnx_path),
        "report": str(result.report_dir),
    }
    print(json.dumps(summary, indent=2))
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_registered

    name, _, version = args.model.partition("@")
    result = evaluate_registered(_registry(args), name, version or None, args.data, args.out)
    print(
        json.dumps(
            {"model": result.model, "metrics": result.metrics, "report": str(result.report_dir)}, indent=2
        )
    )
    return EXIT_OK
