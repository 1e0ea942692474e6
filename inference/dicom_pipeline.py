"""DICOM series triage as named stages.

    load_series  ->  check_input_spec  ->  preprocess_volume  ->  infer (2D slices | 3D sliding window)
                 ->  back to the source grid  ->  findings

Each stage is a function so training, tests and the benchmark can call the
one they need; ``run_dicom_series_triage`` chains them. The network is any
``numpy -> numpy`` callable: an ``OnnxNetwork``, a torch wrapper, a lambda.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from inference.dicom_series import SeriesInput, Volume, load_series
from inference.errors import InputSpecError
from inference.postprocessing import aggregate, label_channels
from inference.preprocessing import center_crop_or_pad, preprocess_volume, resize, slices_to_batch
from inference.results import BoundingBox, Finding, SeriesTriageResult, priority_for
from inference.routing import normalize_term
from inference.sliding_window import sliding_window_inference
from models.card import ModelCard, Task

Network = Callable[[NDArray[np.float32]], NDArray[np.float32]]


def check_input_spec(volume: Volume, card: ModelCard) -> None:
    """Refuse data the card cannot be run on, before any compute is spent."""
    allowed = card.serves.modalities
    if allowed and normalize_term(volume.modality) not in {normalize_term(m) for m in allowed}:
        raise InputSpecError(card.key, "modality", allowed, volume.modality)
    if card.input.spatial_dims == 3 and volume.shape[0] < 2:
        raise InputSpecError(card.key, "slices", ">= 2 for a 3D model", volume.shape[0])
    if card.input.spacing_mm is not None and not volume.has_geometry:
        raise InputSpecError(card.key, "pixel spacing", card.input.spacing_mm, None)
    if card.input.window is not None and volume.modality.upper() != "CT":
        raise InputSpecError(card.key, "modality (an HU window needs CT)", "CT", volume.modality)


def infer_in_batches(batch: NDArray[np.float32], network: Network, batch_size: int) -> NDArray[np.float32]:
    """Run the network over the first axis in chunks of ``batch_size`` and concatenate."""
    outputs = [np.asarray(network(batch[i : i + batch_size])) for i in range(0, batch.shape[0], batch_size)]
    return np.concatenate(outputs, axis=0).astype(np.float32)


def infer_slice_scores(
    model_input: NDArray[np.float32], card: ModelCard, network: Network, batch_size: int
) -> NDArray[np.float32]:
    """2D classification: (z, y, x) -> (labels, z) per-slice scores."""
    raw = infer_in_batches(slices_to_batch(model_input, card.input), network, batch_size)
    return label_channels(raw.reshape(raw.shape[0], -1), card).T.copy()


def infer_slice_masks(
    model_input: NDArray[np.float32], card: ModelCard, network: Network, batch_size: int
) -> NDArray[np.float32]:
    """2D segmentation: (z, y', x') -> (labels, z, y', x') probabilities on the preprocessed grid."""
    raw = infer_in_batches(slices_to_batch(model_input, card.input), network, batch_size)
    probs = label_channels(raw, card)
    plane = model_input.shape[1:]
    restored = center_crop_or_pad(probs, plane) if card.input.spacing_mm is not None else resize(probs, plane)
    return restored.transpose(1, 0, 2, 3).copy()


def infer_volume_masks(
    model_input: NDArray[np.float32], card: ModelCard, network: Network, batch_size: int
) -> NDArray[np.float32]:
    """3D segmentation: sliding window over (z, y', x') -> (labels, z', y', x')."""
    image = np.repeat(model_input[None], card.input.channels, axis=0)
    raw = sliding_window_inference(image, card.input.patch_size, network, card.input.overlap, batch_size)
    return label_channels(raw, card, channel_axis=0)


def infer_volume_scores(
    model_input: NDArray[np.float32], card: ModelCard, network: Network
) -> NDArray[np.float32]:
    """3D classification: the whole volume fitted to the patch -> (labels, 1)."""
    size = card.input.patch_size
    fitted = (
        center_crop_or_pad(model_input, size)
        if card.input.spacing_mm is not None
        else resize(model_input, size)
    )
    batch = np.repeat(fitted[None, None], card.input.channels, axis=1)
    raw = np.asarray(network(batch), dtype=np.float32)
    return label_channels(raw.reshape(1, -1), card).T.copy()


def to_source_grid(probs: NDArray[np.float32], volume: Volume) -> NDArray[np.float32]:
    """(labels, z', y', x') on the model grid -> (labels, z, y, x) aligned with the source slices."""
    if probs.shape[1:] == volume.shape:
        return probs
    return resize(probs, volume.shape)


def findings_from_slice_scores(scores: NDArray[np.float32], volume: Volume, card: ModelCard) -> list[Finding]:
    """A finding per label whose series score reaches its report threshold, at its peak slice."""
    findings = []
    for index, label in enumerate(card.labels):
        score = aggregate(scores[index], card.output.aggregation, card.output.top_k)
        thresholds = card.thresholds_for(label)
        if score < thresholds.report:
            continue
        peak = int(np.argmax(scores[index])) if scores.shape[1] > 1 else None
        findings.append(_finding(card, volume, label, score, peak, None, None, scores[index]))
    return findings


def findings_from_masks(probs: NDArray[np.float32], volume: Volume, card: ModelCard) -> list[Finding]:
    """A finding per label with a voxel above its report threshold: mask, peak slice, bounding box."""
    findings = []
    for index, label in enumerate(card.labels):
        prob = probs[index]
        score = float(prob.max())
        report = card.thresholds_for(label).report
        if score < report:
            continue
        mask = prob >= report
        peak = int(np.unravel_index(int(np.argmax(prob)), prob.shape)[0])
        findings.append(_finding(card, volume, label, score, peak, _bbox(mask[peak]), mask, prob))
    return findings


def _bbox(mask: NDArray[np.bool_]) -> BoundingBox:
    rows, cols = np.nonzero(mask)
    y0, x0 = int(rows.min()), int(cols.min())
    return BoundingBox(x=x0, y=y0, width=int(cols.max()) - x0 + 1, height=int(rows.max()) - y0 + 1)


def _finding(
    card: ModelCard,
    volume: Volume,
    label: str,
    score: float,
    peak: int | None,
    bbox: BoundingBox | None,
    mask: NDArray[np.bool_] | None,
    heatmap: NDArray[np.float32],
) -> Finding:
    return Finding(
        label=label,
        score=score,
        priority=priority_for(score, card.thresholds_for(label)),
        model_name=card.name,
        model_version=card.version,
        series_instance_uid=volume.series_instance_uid,
        sop_instance_uid=volume.sop_instance_uids[peak] if peak is not None else None,
        slice_index=peak,
        bbox=bbox,
        mask=mask,
        heatmap=heatmap,
    )


def run_dicom_series_triage(
    series: SeriesInput | Volume,
    card: ModelCard,
    network: Network,
    batch_size: int = 8,
) -> SeriesTriageResult:
    """Series (datasets, paths or a loaded ``Volume``) -> scores, findings and a heatmap for one model."""
    volume = series if isinstance(series, Volume) else load_series(series)
    check_input_spec(volume, card)
    model_input, _ = preprocess_volume(volume.pixels, volume.spacing, card.input)
    if card.task is Task.SEGMENTATION:
        infer = infer_slice_masks if card.input.spatial_dims == 2 else infer_volume_masks
        heatmap = to_source_grid(infer(model_input, card, network, batch_size), volume)
        findings = findings_from_masks(heatmap, volume, card)
    elif card.task is Task.CLASSIFICATION:
        if card.input.spatial_dims == 2:
            heatmap = infer_slice_scores(model_input, card, network, batch_size)
        else:
            heatmap = infer_volume_scores(model_input, card, network)
        findings = findings_from_slice_scores(heatmap, volume, card)
    else:
        raise InputSpecError(card.key, "task", "classification or segmentation", card.task.value)
    return _result(card, volume, heatmap, findings)


def _result(
    card: ModelCard, volume: Volume, heatmap: NDArray[np.float32], findings: list[Finding]
) -> SeriesTriageResult:
    flat = heatmap.reshape(heatmap.shape[0], -1)
    if card.task is Task.SEGMENTATION:
        scores = {label: float(flat[i].max()) for i, label in enumerate(card.labels)}
    else:
        scores = {
            label: aggregate(flat[i], card.output.aggregation, card.output.top_k)
            for i, label in enumerate(card.labels)
        }
    return SeriesTriageResult(
        model_name=card.name,
        model_version=card.version,
        study_instance_uid=volume.study_instance_uid,
        series_instance_uid=volume.series_instance_uid,
        sop_instance_uids=volume.sop_instance_uids,
        scores=scores,
        findings=findings,
        heatmap=heatmap,
    )
