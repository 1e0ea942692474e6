"""``train(recipe)``: data -> network -> fit -> ONNX export + parity -> report -> registry.

Each stage is a small function; ``train`` chains them and returns a
``TrainingResult`` saying where everything went. The card's metrics are those
of the exported ONNX model on the held-out split, scored through the serving
post-processing: the number on the card is the number of the file served.

The trained state dict is kept beside the ONNX file (``weights.pt``, its sha256 on
the card) so a registered version can later be fine-tuned (``init_from`` in a
recipe, ``training.finetune``); a fine-tuned card records its ``parent``.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.session import OnnxNetwork, create_session
from models.card import ModelCard, dump_card
from models.errors import ModelExistsError
from models.registry import ModelRegistry, RegisteredModel, sha256_file
from training import report
from training.data import DataBundle, DataRequest, load_data
from training.evaluation import CPU_SESSION, HEADLINE, Evaluation, evaluate
from training.export import ParityReport, check_parity, export, parity_inputs
from training.finetune import Parent, load_parent_weights, resolve_parent
from training.loop import FitResult, fit, torch_network
from training.recipe import Recipe
from training.tasks import adapter_for

log = logging.getLogger(__name__)
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "card.json"
RECIPE_FILE = "recipe.json"


@dataclass(frozen=True)
class TrainingResult:
    """Where a run left its outputs, and the numbers that matter."""

    card: ModelCard
    onnx_path: Path
    weights_path: Path
    report_dir: Path
    metrics: dict[str, float]
    fit: FitResult
    parity: ParityReport
    registered: RegisteredModel | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def draft_card(recipe: Recipe) -> ModelCard:
    """The card as the recipe defines it, before metrics and checksum exist."""
    spec = recipe.card
    return ModelCard(
        name=spec.name,
        version=spec.version,
        task=recipe.task,
        serves=spec.serves,
        input=recipe.input,
        output=spec.output,
        labels=spec.labels,
        label_codes=spec.label_codes,
        thresholds=spec.thresholds,
        architecture=recipe.architecture.name,
        parent=recipe.init_from.key if recipe.init_from is not None else None,
        manufacturer=spec.manufacturer,
        intended_use=spec.intended_use,
        not_for_clinical_use=spec.not_for_clinical_use,
    )


def seed_everything(seed: int, threads: int | None) -> None:
    """Same recipe, same machine, same weights: seed every generator and pin deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)  # MONAI internals read the legacy global generator
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads is not None:
        torch.set_num_threads(threads)


def build_module(recipe: Recipe) -> torch.nn.Module:
    """The recipe's architecture with 1 or 3 input channels and 2 outputs (background, label)."""
    from models.networks import ARCHITECTURES

    arch = ARCHITECTURES[recipe.architecture.name]
    out_key = "num_classes" if "num_classes" in arch.defaults else "out_channels"
    overrides = {"in_channels": recipe.input.channels, out_key: 2, **recipe.architecture.overrides}
    return arch.build(**overrides)


def train(
    recipe: Recipe,
    out_dir: Path,
    registry: ModelRegistry | None = None,
    data: DataBundle | None = None,
) -> TrainingResult:
    """Run a recipe end to end; with a registry the model is registered as a candidate (shadow).

    With ``recipe.init_from`` the run starts from that registered version's weights
    (checked before any data is loaded) and the card records it as ``parent``; the
    new version is never promoted here.
    """
    from models.networks import ARCHITECTURES

    card = draft_card(recipe)
    if registry is not None:
        check_unregistered(registry, card)
    parent = resolve_parent(recipe, registry)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(recipe.seed, recipe.threads)
    request = DataRequest(recipe.kind, recipe.input, card.labels[0])
    bundle = data or load_data(recipe.data, request)
    log.info("%s: %s", card.key, bundle.description)
    module = build_module(recipe)
    extra = start_from_parent(module, parent, recipe, card, bundle) if parent is not None else {}
    adapter = adapter_for(recipe.kind, recipe.input.patch_size, recipe.foreground_crop_fraction)
    fitted = fit(module, adapter, bundle, recipe, card, out_dir)
    weights_path = save_weights(module, out_dir / WEIGHTS_FILE)
    onnx_path = export(module, (recipe.input.channels, *recipe.input.patch_size), out_dir / ONNX_FILE)
    tolerance = ARCHITECTURES[recipe.architecture.name].parity_atol
    parity = check_parity(
        module, onnx_path, parity_inputs(bundle.val, recipe.input.patch_size), tolerance, card.key
    )
    onnx_eval = evaluate(
        OnnxNetwork(create_session(onnx_path, CPU_SESSION)), bundle.val, card, recipe.batch_size
    )
    final = card_with_metrics(card, onnx_eval, onnx_path, weights_path)
    write_run_report(out_dir, recipe, final, bundle, fitted, parity, onnx_eval, extra)
    registered = registry.register(final, onnx_path, weights_path) if registry is not None else None
    return TrainingResult(
        final, onnx_path, weights_path, out_dir, final.metrics, fitted, parity, registered, extra
    )


def check_unregistered(registry: ModelRegistry, card: ModelCard) -> None:
    """Fail before training, not after, when the version to be produced is already registered."""
    if (registry.root / card.name / card.version).exists():
        raise ModelExistsError(card.name, card.version)


def start_from_parent(
    module: torch.nn.Module, parent: Parent, recipe: Recipe, card: ModelCard, bundle: DataBundle
) -> dict[str, Any]:
    """Load the parent's weights and score them on the new held-out split (the "before" of the report)."""
    load_parent_weights(module, parent, recipe)
    before = evaluate(torch_network(module), bundle.val, card, recipe.batch_size)
    log.info("%s: fine-tuning from %s (held-out before: %s)", card.key, parent.key, before.metrics)
    return {"init_from": {"model": parent.key, "heldout_metrics_before": before.metrics}}


def save_weights(module: torch.nn.Module, path: Path) -> Path:
    """The (best-epoch) state dict, what a later fine-tune starts from."""
    torch.save(module.state_dict(), path)
    return path


def card_with_metrics(
    card: ModelCard, evaluation: Evaluation, onnx_path: Path, weights_path: Path | None = None
) -> ModelCard:
    """The draft card plus held-out metrics (prefixed ``val_``) and the ONNX (and weights) sha256."""
    metrics = {f"val_{k}": round(float(v), 6) for k, v in evaluation.metrics.items()}
    update: dict[str, Any] = {"metrics": metrics, "onnx_sha256": sha256_file(onnx_path)}
    if weights_path is not None:
        update["weights_sha256"] = sha256_file(weights_path)
    return card.model_copy(update=update)


def write_run_report(
    out_dir: Path,
    recipe: Recipe,
    card: ModelCard,
    bundle: DataBundle,
    fitted: FitResult,
    parity: ParityReport,
    evaluation: Evaluation,
    extra: dict[str, Any] | None = None,
) -> None:
    """metrics.json, plots, the card and the recipe that produced it, side by side."""
    payload = {
        "model": card.key,
        "kind": recipe.kind,
        "data": bundle.description,
        "heldout_metrics": evaluation.metrics,
        "best_epoch": fitted.best_epoch,
        "epochs_run": len(fitted.history),
        "stop_reason": fitted.stop_reason,
        "train_seconds": round(fitted.seconds, 1),
        "parity": {"max_abs_diff": parity.max_abs_diff, "tolerance": parity.tolerance},
        "history": fitted.history,
        "onnx_sha256": card.onnx_sha256,
        "weights_sha256": card.weights_sha256,
        **(extra or {}),
    }
    report.write_metrics(out_dir, payload)
    if evaluation.has_both_classes:
        report.write_plots(out_dir, evaluation.targets, evaluation.scores, _threshold(card), card.key)
    if fitted.history:
        report.write_history_plot(out_dir, fitted.history, HEADLINE[recipe.kind])
    dump_card(card, out_dir / CARD_FILE)
    (out_dir / RECIPE_FILE).write_text(json.dumps(recipe.model_dump(mode="json"), indent=2) + "\n")


def _threshold(card: ModelCard) -> float:
    return card.thresholds_for(card.labels[0]).report
