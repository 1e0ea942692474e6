"""DICOM SR (TID 1500) and SEG round trips: write, read back with highdicom and pydicom, compare."""

from __future__ import annotations

import io
from collections.abc import Callable

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from inference.dicom_pipeline import run_dicom_series_triage
from inference.dicom_series import load_series
from inference.results import SeriesTriageResult
from inference.writers import NothingToWriteError, SourceMismatchError, write_seg, write_sr
from models.card import ModelCard

CardFactory = Callable[..., ModelCard]
SHA = "ab" * 32


def dense_voxel_logits(batch: np.ndarray) -> np.ndarray:
    return ((batch[:, :1] - 0.9) * 100.0).astype(np.float32)


def brightest_pixel_logit(batch: np.ndarray) -> np.ndarray:
    return (batch.reshape(batch.shape[0], -1).max(axis=1, keepdims=True) * 20.0 - 15.0).astype(np.float32)


def _seg_card(make_card: CardFactory) -> ModelCard:
    return make_card(
        task="segmentation",
        input={"spatial_dims": 3, "patch_size": [4, 16, 16], "window": {"center": 40, "width": 400}},
        label_codes={"dense": {"value": "4147007", "scheme": "SCT", "meaning": "Mass"}},
        onnx_sha256=SHA,
    )


def _roundtrip(dataset: Dataset) -> Dataset:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


@pytest.fixture
def seg_result(ct_datasets: list[Dataset], make_card: CardFactory) -> tuple[SeriesTriageResult, ModelCard]:
    card = _seg_card(make_card)
    return run_dicom_series_triage(ct_datasets, card, dense_voxel_logits), card


def test_sr_round_trip(seg_result: tuple[SeriesTriageResult, ModelCard], ct_datasets: list[Dataset]) -> None:
    result, card = seg_result
    sr = hd.sr.srread(io.BytesIO(_bytes(write_sr(result, card, ct_datasets))))
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 1
    group = groups[0]
    assert group.finding_type.value == "4147007"
    region = group.roi
    assert region is not None
    finding = result.findings[0]
    assert (
        region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == finding.sop_instance_uid
    )
    assert finding.bbox is not None
    corners = np.asarray(region.value)
    assert corners.min(axis=0).tolist() == [finding.bbox.x, finding.bbox.y]
    (score,) = group.get_measurements()
    assert score.value == pytest.approx(finding.score)
    device = sr.content.get_observer_contexts(observer_type=pydicom.sr.codedict.codes.DCM.Device)
    assert len(device) == 1
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == set(result.sop_instance_uids)


def test_sr_names_model_as_observer_device(
    seg_result: tuple[SeriesTriageResult, ModelCard], ct_datasets: list[Dataset]
) -> None:
    result, card = seg_result
    text = str(_roundtrip(write_sr(result, card, ct_datasets)))
    assert "ct-test@1.0.0" in text
    assert "Imaging Measurement Report" in text


def test_sr_for_classification_references_the_peak_slice(
    ct_datasets: list[Dataset], make_card: CardFactory
) -> None:
    card = make_card()
    result = run_dicom_series_triage(ct_datasets, card, brightest_pixel_logit)
    sr = hd.sr.srread(io.BytesIO(_bytes(write_sr(result, card, ct_datasets))))
    (group,) = sr.content.get_image_measurement_groups()
    (source,) = group.source_images
    assert source.referenced_sop_instance_uid == result.findings[0].sop_instance_uid


def test_seg_round_trip(seg_result: tuple[SeriesTriageResult, ModelCard], ct_datasets: list[Dataset]) -> None:
    result, card = seg_result
    seg = hd.seg.segread(io.BytesIO(_bytes(write_seg(result, card, ct_datasets))))
    assert seg.number_of_segments == 1
    description = seg.get_segment_description(1)
    assert description.segment_label == "dense"
    assert description.algorithm_identification[0].AlgorithmVersion == "1.0.0"
    volume = load_series(ct_datasets)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(volume.sop_instance_uids),
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )
    mask = result.findings[0].mask
    assert mask is not None
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), mask)
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == set(volume.sop_instance_uids)


def test_rerun_writes_identical_uids(
    seg_result: tuple[SeriesTriageResult, ModelCard], ct_datasets: list[Dataset]
) -> None:
    result, card = seg_result
    first, second = write_sr(result, card, ct_datasets), write_sr(result, card, ct_datasets[::-1])
    assert first.SOPInstanceUID == second.SOPInstanceUID
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert (
        write_seg(result, card, ct_datasets).SOPInstanceUID
        == write_seg(result, card, ct_datasets).SOPInstanceUID
    )


def test_seg_without_masks_is_refused(ct_datasets: list[Dataset], make_card: CardFactory) -> None:
    card = make_card()
    result = run_dicom_series_triage(ct_datasets, card, brightest_pixel_logit)
    with pytest.raises(NothingToWriteError):
        write_seg(result, card, ct_datasets)


def test_sources_must_cover_the_result(
    seg_result: tuple[SeriesTriageResult, ModelCard], ct_datasets: list[Dataset]
) -> None:
    result, card = seg_result
    with pytest.raises(SourceMismatchError) as info:
        write_sr(result, card, ct_datasets[:-1])
    assert len(info.value.missing) == 1


def _bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
