"""Raw network outputs -> per-label scores in [0, 1], as the card's output spec says."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from inference.errors import OutputSpecError
from models.card import Activation, Aggregation, ModelCard


def activate(raw: NDArray[np.float32], activation: Activation, channel_axis: int = 1) -> NDArray[np.float32]:
    """Logits -> probabilities (sigmoid per channel, or softmax across channels)."""
    x = raw.astype(np.float32)
    if activation is Activation.SIGMOID:
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    if activation is Activation.SOFTMAX:
        shifted = np.exp(x - x.max(axis=channel_axis, keepdims=True))
        return (shifted / shifted.sum(axis=channel_axis, keepdims=True)).astype(np.float32)
    return x


def label_channels(raw: NDArray[np.float32], card: ModelCard, channel_axis: int = 1) -> NDArray[np.float32]:
    """Scores with exactly one channel per card label.

    A softmax network may carry one extra leading background channel (the MONAI
    segmentation convention); it is dropped after the softmax.
    """
    probs = activate(raw, card.output.activation, channel_axis)
    channels, labels = raw.shape[channel_axis], len(card.labels)
    if channels == labels:
        return probs
    if channels == labels + 1 and card.output.activation is Activation.SOFTMAX:
        return np.take(probs, np.arange(1, channels), axis=channel_axis)
    raise OutputSpecError(card.key, f"{labels} channels (one per label) on axis {channel_axis}", raw.shape)


def aggregate(scores: NDArray[np.float32], aggregation: Aggregation, top_k: int) -> float:
    """Many slice/tile scores for one label -> one series/slide score."""
    if scores.size == 0:
        return 0.0
    if aggregation is Aggregation.MAX:
        return float(scores.max())
    if aggregation is Aggregation.MEAN:
        return float(scores.mean())
    k = min(top_k, scores.size)
    return float(np.sort(scores, axis=None)[-k:].mean())
