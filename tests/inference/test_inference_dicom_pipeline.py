"""DICOM series triage with lambda networks (2D, 3D) and with an exported ONNX model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from inference.dicom_pipeline import run_dicom_series_triage
from inference.dicom_series import load_series
from inference.errors import InputSpecError, OutputSpecError
from inference.results import BoundingBox, Priority
from inference.sliding_window import gaussian_importance, sliding_window_inference, window_starts
from models.card import ModelCard

CardFactory = Callable[..., ModelCard]


def brightest_pixel_logit(batch: np.ndarray) -> np.ndarray:
    """Windowed dense bone (1.0) -> logit +5, soft tissue (0.5) -> logit -5."""
    return (batch.reshape(batch.shape[0], -1).max(axis=1, keepdims=True) * 20.0 - 15.0).astype(np.float32)


def dense_voxel_logits(batch: np.ndarray) -> np.ndarray:
    """Per-voxel logit, positive only where the window saturates (the dense cube)."""
    return ((batch[:, :1] - 0.9) * 100.0).astype(np.float32)


def test_window_starts_cover_the_axis() -> None:
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 6, 7]
    assert window_starts(3, 4, 0.5) == [0]


def test_gaussian_importance_peaks_in_the_centre() -> None:
    weights = gaussian_importance((5, 5))
    assert weights[2, 2] == weights.max() == 1.0
    assert weights.min() > 0.0


def test_sliding_window_of_identity_is_identity() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((1, 7, 19, 13), dtype=np.float32)
    out = sliding_window_inference(image, (4, 8, 8), lambda x: x * 2.0, overlap=0.5, batch_size=3)
    np.testing.assert_allclose(out, image * 2.0, rtol=1e-5)


def test_sliding_window_handles_images_smaller_than_the_window() -> None:
    image = np.ones((1, 2, 3), dtype=np.float32)
    out = sliding_window_inference(image, (4, 4), lambda x: np.concatenate([x, -x], axis=1))
    assert out.shape == (2, 2, 3)
    np.testing.assert_allclose(out[1], -1.0)


def test_2d_classification_finds_the_dense_slice(ct_datasets: list[Dataset], make_card: CardFactory) -> None:
    result = run_dicom_series_triage(ct_datasets, make_card(), brightest_pixel_logit, batch_size=3)
    volume = load_series(ct_datasets)
    assert result.heatmap.shape == (1, 8)
    assert [f.label for f in result.findings] == ["dense"]
    finding = result.findings[0]
    assert finding.slice_index in {4, 5, 6}
    assert finding.sop_instance_uid == volume.sop_instance_uids[finding.slice_index]
    assert finding.score > 0.99
    assert finding.priority is Priority.CRITICAL
    assert result.priority is Priority.CRITICAL
    assert finding.model_version == "1.0.0"
    assert result.heatmap[0, 0] < 0.01


def test_no_finding_below_the_report_threshold(
    make_series: Callable[..., list[Dataset]], make_card: CardFactory
) -> None:
    result = run_dicom_series_triage(make_series(blob=None), make_card(), brightest_pixel_logit)
    assert result.findings == []
    assert result.scores["dense"] < 0.01
    assert result.priority is Priority.ROUTINE


def _seg_card(make_card: CardFactory, dims: int, **input_overrides: Any) -> ModelCard:
    patch = [32, 32] if dims == 2 else [4, 16, 16]
    spec = {
        "spatial_dims": dims,
        "patch_size": patch,
        "window": {"center": 40, "width": 400},
        **input_overrides,
    }
    return make_card(task="segmentation", input=spec, output={"activation": "sigmoid"})


@pytest.mark.parametrize("dims", [2, 3])
def test_segmentation_mask_and_box_on_the_source_grid(
    dims: int, ct_datasets: list[Dataset], make_card: CardFactory
) -> None:
    result = run_dicom_series_triage(
        ct_datasets, _seg_card(make_card, dims), dense_voxel_logits, batch_size=2
    )
    (finding,) = result.findings
    assert finding.mask is not None
    assert finding.mask.shape == (8, 32, 32)
    assert finding.mask.sum() == 3 * 5 * 5
    assert finding.bbox == BoundingBox(x=18, y=10, width=5, height=5)
    assert finding.slice_index in {4, 5, 6}
    assert result.heatmap.shape == (1, 8, 32, 32)


def test_segmentation_with_resampling_maps_back(ct_datasets: list[Dataset], make_card: CardFactory) -> None:
    card = _seg_card(make_card, 2, spacing_mm=[1.6, 1.6], patch_size=[16, 16])
    result = run_dicom_series_triage(ct_datasets, card, dense_voxel_logits)
    (finding,) = result.findings
    assert finding.mask is not None
    assert finding.mask.shape == (8, 32, 32)
    assert finding.bbox is not None
    assert 16 <= finding.bbox.x <= 19
    assert 8 <= finding.bbox.y <= 11


def test_softmax_background_channel_is_dropped(ct_datasets: list[Dataset], make_card: CardFactory) -> None:
    spec = {"spatial_dims": 3, "patch_size": [4, 16, 16], "window": {"center": 40, "width": 400}}
    card = make_card(task="segmentation", input=spec, output={"activation": "softmax"})

    def two_channels(batch: np.ndarray) -> np.ndarray:
        fg = dense_voxel_logits(batch)
        return np.concatenate([-fg, fg], axis=1)

    (finding,) = run_dicom_series_triage(ct_datasets, card, two_channels).findings
    assert finding.mask is not None
    assert finding.mask.sum() == 75


def test_wrong_output_channels_is_a_clear_error(ct_datasets: list[Dataset], make_card: CardFactory) -> None:
    with pytest.raises(OutputSpecError) as info:
        run_dicom_series_triage(ct_datasets, make_card(), lambda x: np.zeros((x.shape[0], 3), np.float32))
    assert info.value.model == "ct-test@1.0.0"


def test_3d_card_cannot_run_on_a_single_slice(make_card: CardFactory) -> None:
    path = get_testdata_file("CT_small.dcm")
    with pytest.raises(InputSpecError) as info:
        run_dicom_series_triage([path], _seg_card(make_card, 3), dense_voxel_logits)
    assert info.value.field == "slices"
    assert info.value.actual == 1


def test_card_for_ct_refuses_mr(make_card: CardFactory) -> None:
    path = get_testdata_file("MR_small.dcm")
    with pytest.raises(InputSpecError) as info:
        run_dicom_series_triage([path], make_card(), brightest_pixel_logit)
    assert info.value.field == "modality"
    assert info.value.actual == "MR"


def test_spacing_card_needs_pixel_spacing(
    make_series: Callable[..., list[Dataset]], make_card: CardFactory
) -> None:
    series = make_series(slices=2)
    for ds in series:
        del ds.PixelSpacing
    card = _seg_card(make_card, 2, spacing_mm=[1.0, 1.0])
    with pytest.raises(InputSpecError, match="pixel spacing"):
        run_dicom_series_triage(series, card, dense_voxel_logits)


def test_onnx_session_matches_torch_through_the_pipeline(
    ct_datasets: list[Dataset], make_card: CardFactory, tiny_onnx: dict[str, Any]
) -> None:
    torch = pytest.importorskip("torch")
    from inference.session import OnnxNetwork, create_session

    module, path = tiny_onnx["segmenter"]

    def torch_network(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    card = make_card(
        task="segmentation",
        input={"spatial_dims": 3, "patch_size": [4, 16, 16], "window": {"center": 40, "width": 400}},
        labels=["lesion"],
        output={"activation": "softmax"},
        thresholds={},
    )
    onnx_result = run_dicom_series_triage(ct_datasets, card, OnnxNetwork(create_session(path)), batch_size=4)
    torch_result = run_dicom_series_triage(ct_datasets, card, torch_network, batch_size=4)
    np.testing.assert_allclose(onnx_result.heatmap, torch_result.heatmap, atol=1e-4)
