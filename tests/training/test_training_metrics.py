"""Metrics against brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import DiceAccumulator, confusion_matrix, roc_auc, roc_curve


def _mann_whitney(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


def test_auc_equals_mann_whitney_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes many ties
    assert roc_auc(y, s) == pytest.approx(_mann_whitney(y, s))


def test_roc_extremes() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    curve = roc_curve(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert (curve.fpr[0], curve.tpr[0], curve.fpr[-1], curve.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="both"):
        roc_curve(np.ones(3), np.ones(3))


def test_confusion_matrix() -> None:
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([0.2, 0.6, 0.4, 0.7, 0.9])
    assert confusion_matrix(y, s, 0.5).tolist() == [[1, 1], [1, 2]]


def test_dice_pooled_and_per_case() -> None:
    acc = DiceAccumulator()
    acc.add(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool))
    acc.add(np.zeros(4, bool), np.zeros(4, bool))  # empty case: pooled only
    result = acc.result()
    assert result["dice"] == pytest.approx(2 / 3)
    assert result["dice_mean_per_case"] == pytest.approx(2 / 3)
