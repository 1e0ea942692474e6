"""Validation metrics in plain numpy: ROC/AUC, confusion matrix, Dice.

Plain numpy rather than scikit-learn (not a dependency) or MONAI metric objects
(stateful, torch tensors), because ``hoichan evaluate`` scores ONNX outputs and
the same functions must serve both paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class RocCurve:
    """False/true positive rates at each distinct score threshold (descending), from (0, 0) to (1, 1)."""

    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]
    thresholds: NDArray[np.float64]

    @property
    def auc(self) -> float:
        """Area under the curve by the trapezoid rule (equals the Mann-Whitney U statistic)."""
        return float(np.trapezoid(self.tpr, self.fpr))


def roc_curve(targets: NDArray[np.integer], scores: NDArray[np.floating]) -> RocCurve:
    """ROC of binary ``targets`` (0/1) ranked by ``scores``; ties share one point, as they should."""
    y = np.asarray(targets).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.all() or not y.any():
        raise ValueError("ROC needs both positive and negative targets")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=np.r_[np.inf, s[last_of_tie]])


def roc_auc(targets: NDArray[np.integer], scores: NDArray[np.floating]) -> float:
    return roc_curve(targets, scores).auc


def confusion_matrix(
    targets: NDArray[np.integer], scores: NDArray[np.floating], threshold: float
) -> NDArray[np.int64]:
    """2x2 counts [[TN, FP], [FN, TP]] with "positive" meaning ``score >= threshold``."""
    y = np.asarray(targets).astype(bool).ravel()
    p = np.asarray(scores).ravel() >= threshold
    return np.array([[np.sum(~y & ~p), np.sum(~y & p)], [np.sum(y & ~p), np.sum(y & p)]], dtype=np.int64)


def classification_metrics(
    targets: NDArray[np.integer], scores: NDArray[np.floating], threshold: float
) -> dict[str, float]:
    """AUC plus sensitivity, specificity and accuracy at the card's report threshold."""
    (tn, fp), (fn, tp) = confusion_matrix(targets, scores, threshold).tolist()
    return {
        "auc": roc_auc(targets, scores),
        "sensitivity": tp / max(tp + fn, 1),
        "specificity": tn / max(tn + fp, 1),
        "accuracy": (tp + tn) / max(tp + tn + fp + fn, 1),
        "n": float(tp + tn + fp + fn),
        "n_positive": float(tp + fn),
    }


@dataclass
class DiceAccumulator:
    """Dice over a whole validation set (voxel counts summed over cases) and the mean per case.

    The pooled Dice is the headline: a per-case mean punishes a two-voxel miss in
    a lesion-free volume as hard as a missed large lesion. Cases without
    foreground in either mask are not averaged (their Dice is undefined).
    """

    intersection: int = 0
    total: int = 0
    per_case: list[float] | None = None
    voxels_predicted: int = 0
    voxels_true: int = 0

    def add(self, prediction: NDArray[np.bool_], target: NDArray[np.bool_]) -> None:
        inter = int(np.logical_and(prediction, target).sum())
        size = int(prediction.sum()) + int(target.sum())
        self.intersection += inter
        self.total += size
        self.voxels_predicted += int(prediction.sum())
        self.voxels_true += int(target.sum())
        if self.per_case is None:
            self.per_case = []
        if size:
            self.per_case.append(2.0 * inter / size)

    def result(self) -> dict[str, float]:
        cases = self.per_case or []
        return {
            "dice": 2.0 * self.intersection / self.total if self.total else 1.0,
            "dice_mean_per_case": float(np.mean(cases)) if cases else 1.0,
            "voxels_predicted": float(self.voxels_predicted),
            "voxels_true": float(self.voxels_true),
        }
