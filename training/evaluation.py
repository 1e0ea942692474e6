"""Scoring a network on validation examples, the way the serving pipelines run it.

The network is any ``numpy -> numpy`` callable, so the same functions score the
torch model during training (validation, early stopping) and the exported ONNX
model afterwards (card metrics, ``hoichan evaluate``). Outputs go through the
card's ``label_channels`` and, for volumes, the serving sliding window: a
validation number means what the deployed model will do. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from inference.dicom_pipeline import infer_in_batches
from inference.postprocessing import label_channels
from inference.session import CPU, SessionConfig
from inference.sliding_window import sliding_window_inference
from models.card import ModelCard, Task
from training.data import ClassificationSet, Examples, SegmentationSet
from training.errors import UnsupportedModelError
from training.metrics import DiceAccumulator, classification_metrics
from training.recipe import Kind

Network = Callable[[NDArray[np.float32]], NDArray[np.float32]]
#: ONNX Runtime on CPU for scoring: training and evaluation must not depend on a GPU build.
CPU_SESSION = SessionConfig(providers=(CPU,), warmup_runs=0)
HEADLINE: dict[str, str] = {
    "classification-2d": "auc",
    "segmentation-3d": "dice",
    "tile-classification": "auc",
}


@dataclass(frozen=True)
class Evaluation:
    """Metrics plus the per-example targets and scores behind the ROC curve (cases, for volumes)."""

    metrics: dict[str, float]
    targets: NDArray[np.int64]
    scores: NDArray[np.float32]
    extra: dict[str, list[float]] = field(default_factory=dict)

    @property
    def has_both_classes(self) -> bool:
        return bool(self.targets.size) and 0 < int(self.targets.sum()) < self.targets.size


def kind_of(card: ModelCard) -> Kind:
    """The training kind that produced (or could produce) a card."""
    if card.task is Task.SLIDE_CLASSIFICATION:
        return "tile-classification"
    if card.task is Task.CLASSIFICATION and card.input.spatial_dims == 2:
        return "classification-2d"
    if card.task is Task.SEGMENTATION and card.input.spatial_dims == 3:
        return "segmentation-3d"
    raise UnsupportedModelError(
        card.key, f"{card.input.spatial_dims}D {card.task.value} is not a training kind"
    )


def evaluate(network: Network, examples: Examples, card: ModelCard, batch_size: int = 16) -> Evaluation:
    """Score ``examples`` with ``network``; AUC for classifiers, Dice (+ case detection AUC) for volumes."""
    if isinstance(examples, SegmentationSet):
        return evaluate_segmentation(network, examples, card, batch_size)
    return evaluate_classification(network, examples, card, batch_size)


def report_threshold(card: ModelCard) -> float:
    return card.thresholds_for(card.labels[0]).report


def classification_scores(
    network: Network, inputs: NDArray[np.float32], card: ModelCard, batch_size: int
) -> NDArray[np.float32]:
    """(N, C, H, W) -> (N,) score of the card's first label, through the card's activation."""
    raw = infer_in_batches(inputs, network, batch_size)
    return label_channels(raw.reshape(raw.shape[0], -1), card)[:, 0].astype(np.float32)


def evaluate_classification(
    network: Network, examples: ClassificationSet, card: ModelCard, batch_size: int
) -> Evaluation:
    scores = classification_scores(network, examples.inputs, card, batch_size)
    metrics = classification_metrics(examples.targets, scores, report_threshold(card))
    return Evaluation(metrics, examples.targets, scores)


def volume_probabilities(
    network: Network, volume: NDArray[np.float32], card: ModelCard, batch_size: int
) -> NDArray[np.float32]:
    """(C, z, y, x) -> (z, y, x) probability of the first label via the serving sliding window."""
    raw = sliding_window_inference(volume, card.input.patch_size, network, card.input.overlap, batch_size)
    return label_channels(raw, card, channel_axis=0)[0]


def evaluate_segmentation(
    network: Network, examples: SegmentationSet, card: ModelCard, batch_size: int
) -> Evaluation:
    """Pooled Dice at the report threshold, and case-level detection (max probability vs any lesion)."""
    threshold = report_threshold(card)
    dice = DiceAccumulator()
    scores, targets = [], []
    for volume, mask in zip(examples.volumes, examples.masks, strict=True):
        prob = volume_probabilities(network, volume, card, max(1, batch_size // 4))
        dice.add(prob >= threshold, mask > 0)
        scores.append(float(prob.max()))
        targets.append(int(mask.any()))
    metrics = dice.result()
    evaluation = Evaluation(metrics, np.asarray(targets, np.int64), np.asarray(scores, np.float32))
    if evaluation.has_both_classes:
        detection = classification_metrics(evaluation.targets, evaluation.scores, threshold)
        metrics.update({f"detection_{k}": v for k, v in detection.items()})
    return evaluation
