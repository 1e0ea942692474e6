"""``hoichan models ...``: list, show, register, promote and retire model versions.

The main CLI (``consult_api/cli.py``) owns the top-level parser and calls
``add_models_commands``; every handler takes the parsed namespace and returns
an exit code, so it can be called from tests without a subprocess.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.card import ModelState, load_card
from models.errors import ModelRegistryError
from models.registry import ModelRegistry, RegisteredModel, default_root

Handler = Callable[[argparse.Namespace], int]
EXIT_OK = 0
EXIT_ERROR = 1


def add_models_commands(subparsers: argparse._SubParsersAction) -> None:
    """Attach ``models`` and its sub-commands to the main CLI's sub-parsers."""
    parser = subparsers.add_parser("models", help="model registry: list, show, register, promote, retire")
    parser.add_argument(
        "--registry",
        type=Path,
        default=argparse.SUPPRESS,
        help="registry root (default: $HOICHAN_MODELS_DIR or ./var/models)",
    )
    commands = parser.add_subparsers(dest="models_command", required=True)
    _add_list(commands)
    _add_show(commands)
    _add_register(commands)
    _add_transition(commands, "promote", "make a version the active one for its name", _promote)
    _add_transition(commands, "retire", "take a version out of service", _retire)


def _add_list(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("list", help="list model versions")
    p.add_argument("--name", default=None)
    p.add_argument("--state", choices=[s.value for s in ModelState], default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _bind(p, _list)


def _add_show(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("show", help="print a model card as JSON")
    p.add_argument("name")
    p.add_argument("version", nargs="?", default=None, help="default: the active version")
    p.add_argument("--verify", action="store_true", help="also check the ONNX sha256")
    _bind(p, _show)


def _add_register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("register", help="register a card + ONNX file as a new candidate version")
    p.add_argument("card", type=Path, help="card.json or card.yaml")
    p.add_argument("onnx", type=Path, help="model.onnx")
    p.add_argument("--weights", type=Path, default=None, help="the torch state dict (makes it fine-tunable)")
    p.add_argument("--promote", action="store_true", help="promote it right away")
    _bind(p, _register)


def _add_transition(
    commands: argparse._SubParsersAction,
    name: str,
    help_text: str,
    handler: Handler,
) -> None:
    p = commands.add_parser(name, help=help_text)
    p.add_argument("name")
    p.add_argument("version")
    _bind(p, handler)


def _bind(parser: argparse.ArgumentParser, handler: Handler) -> None:
    """Set both ``func`` and ``handler`` so the main CLI can dispatch with either convention."""
    wrapped = _guarded(handler)
    parser.set_defaults(func=wrapped, handler=wrapped)


def _guarded(handler: Handler) -> Handler:
    """Turn registry errors into a one-line message and exit code 1 instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ModelRegistryError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR

    return run


def registry_from_args(args: argparse.Namespace) -> ModelRegistry:
    root = getattr(args, "registry", None)
    return ModelRegistry(Path(root) if root is not None else default_root())


def _summary(model: RegisteredModel) -> dict[str, Any]:
    card = model.card
    return {
        "name": card.name,
        "version": card.version,
        "state": model.state.value,
        "task": card.task.value,
        "modalities": card.serves.modalities,
        "stains": card.serves.stains,
        "labels": card.labels,
        "onnx_sha256": card.onnx_sha256,
        "parent": card.parent,
        "fine_tunable": model.has_weights,
    }


def _list(args: argparse.Namespace) -> int:
    state = ModelState(args.state) if args.state else None
    rows = [_summary(m) for m in registry_from_args(args).list_models(args.name, state)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows))
    return EXIT_OK


def _table(rows: list[dict[str, Any]]) -> str:
    headers = ["name", "version", "state", "task", "modalities", "labels"]
    cells = [[_cell(r[h]) for h in headers] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    lines = [headers, *cells]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines)


def _cell(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _show(args: argparse.Namespace) -> int:
    registry = registry_from_args(args)
    model = registry.resolve(args.name, args.version)
    if args.verify:
        registry.verify(model)
    out = {
        "state": model.state.value,
        "path": str(model.directory),
        "card": model.card.model_dump(mode="json"),
    }
    print(json.dumps(out, indent=2))
    return EXIT_OK


def _register(args: argparse.Namespace) -> int:
    registry = registry_from_args(args)
    model = registry.register(load_card(args.card), args.onnx, args.weights)
    if args.promote:
        model = registry.promote(model.card.name, model.card.version)
    print(json.dumps(_summary(model), indent=2))
    return EXIT_OK


def _promote(args: argparse.Namespace) -> int:
    model = registry_from_args(args).promote(args.name, args.version)
    print(json.dumps(_summary(model), indent=2))
    return EXIT_OK


def _retire(args: argparse.Namespace) -> int:
    model = registry_from_args(args).retire(args.name, args.version)
    print(json.dumps(_summary(model), indent=2))
    return EXIT_OK
