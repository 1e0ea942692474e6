"""``evaluate_registered``: score a registered model's ONNX file on a data set, with a report.

Runs the verified ONNX bytes from the registry through ONNX Runtime, with the
card's preprocessing and post-processing, so the numbers describe the model as
served. Needs no torch: an ML engineer can evaluate on a serving node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets.manifest import MANIFEST_NAME
from inference.session import OnnxNetwork, create_session
from models.registry import ModelRegistry
from training import report
from training.data import DataRequest, load_data
from training.evaluation import CPU_SESSION, Evaluation, evaluate, kind_of, report_threshold
from training.recipe import DataSpec, ManifestSource, load_data_spec

DEFAULT_EVAL_OUT = Path("var/training/evaluations")


@dataclass(frozen=True)
class EvaluationResult:
    model: str
    metrics: dict[str, float]
    report_dir: Path
    evaluation: Evaluation


def data_spec_for(path: Path) -> DataSpec:
    """A manifest folder is evaluated whole; anything else is a data-section YAML."""
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return ManifestSource(source="manifest", folder=path, val_fraction=1.0)
    return load_data_spec(path)


def evaluate_registered(
    registry: ModelRegistry,
    name: str,
    version: str | None,
    data_path: Path,
    out_dir: Path | None = None,
    batch_size: int = 16,
) -> EvaluationResult:
    """Resolve ``name[@version]``, load its data, score it, write metrics.json (+ ROC/confusion PNGs)."""
    model = registry.resolve(name, version)
    card = model.card
    request = DataRequest(kind_of(card), card.input, card.labels[0], evaluation=True)
    bundle = load_data(data_spec_for(data_path), request)
    network = OnnxNetwork(create_session(registry.load_onnx(model), CPU_SESSION))
    evaluation = evaluate(network, bundle.val, card, batch_size)
    out = out_dir or DEFAULT_EVAL_OUT / card.name / card.version
    report.write_metrics(out, {"model": card.key, "data": bundle.description, "metrics": evaluation.metrics})
    if evaluation.has_both_classes:
        report.write_plots(out, evaluation.targets, evaluation.scores, report_threshold(card), card.key)
    return EvaluationResult(card.key, evaluation.metrics, out, evaluation)
