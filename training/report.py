"""The training report folder: ``metrics.json``, ``roc.png``, ``confusion.png``, ``history.png``.

matplotlib is imported lazily with the Agg backend, so writing a report needs
no display and importing ``training`` costs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.metrics import RocCurve, confusion_matrix, roc_curve

METRICS_FILE = "metrics.json"
ROC_FILE = "roc.png"
CONFUSION_FILE = "confusion.png"
HISTORY_FILE = "history.png"


def write_metrics(folder: Path, payload: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / METRICS_FILE
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_plots(
    folder: Path,
    targets: NDArray[np.integer],
    scores: NDArray[np.floating],
    threshold: float,
    title: str,
) -> list[Path]:
    """ROC curve and confusion matrix at ``threshold`` (needs both classes in ``targets``)."""
    folder.mkdir(parents=True, exist_ok=True)
    roc = roc_curve(targets, scores)
    matrix = confusion_matrix(targets, scores, threshold)
    return [_plot_roc(folder / ROC_FILE, roc, title), _plot_confusion(folder / CONFUSION_FILE, matrix, title)]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_roc(path: Path, roc: RocCurve, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot(roc.fpr, roc.tpr, lw=2, label=f"AUC = {roc.auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="False positive rate", ylabel="True positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01)
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_confusion(path: Path, matrix: NDArray[np.int64], title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(col, row, str(int(count)), ha="center", va="center", color=colour, fontsize=14)
    ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="Predicted", ylabel="True", title=title)
    ax.set_xticklabels(["negative", "positive"])
    ax.set_yticklabels(["negative", "positive"])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_history_plot(folder: Path, history: list[dict[str, float]], metric: str) -> Path:
    """Training loss and validation metric per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    ax.plot(epochs, [h[metric] for h in history], label=f"val {metric}")
    ax.set(xlabel="epoch", ylim=(0, max(1.05, *(h["train_loss"] for h in history))))
    ax.legend()
    fig.tight_layout()
    path = folder / HISTORY_FILE
    fig.savefig(path)
    plt.close(fig)
    return path
