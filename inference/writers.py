"""AI results out as DICOM: findings as an SR measurement report (TID 1500) and masks as a SEG.

Both reference the source instances, name the model version as the observer
device / algorithm, and take their UIDs from a hash of (model version, source
series, kind): a re-run of the same version on the same series writes the same
SOP Instance UIDs, so archives de-duplicate instead of piling up copies.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from inference.errors import InferenceError
from inference.results import BoundingBox, Finding, Priority, SeriesTriageResult
from models.card import PRIVATE_CODING_SCHEME, ModelCard

SCORE_CODE = hd.sr.CodedConcept("ai-score", PRIVATE_CODING_SCHEME, "AI triage score")
PRIORITY_CODE = hd.sr.CodedConcept("triage-priority", PRIVATE_CODING_SCHEME, "Triage priority")
PRIORITY_VALUES = {
    p: hd.sr.CodedConcept(f"prio-{p.value}", PRIVATE_CODING_SCHEME, f"{p.value.title()}") for p in Priority
}
IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")
DEFAULT_SR_SERIES_NUMBER = 9001
DEFAULT_SEG_SERIES_NUMBER = 9002


class NothingToWriteError(InferenceError):
    """A writer was asked to encode results that contain nothing of its kind (e.g. SEG with no masks)."""

    def __init__(self, model: str, what: str) -> None:
        self.model = model
        self.what = what
        super().__init__(f"model {model}: nothing to write ({what})")


class SourceMismatchError(InferenceError):
    """The source datasets given do not cover the instances the result refers to."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        super().__init__(
            f"source datasets lack {len(self.missing)} referenced instances, e.g. {self.missing[:3]}"
        )


def result_uid(card: ModelCard, series_instance_uid: str | None, kind: str) -> str:
    """Deterministic UID: the same model version, series and kind always give the same UID."""
    return str(
        generate_uid(
            entropy_srcs=[card.name, card.version, card.onnx_sha256 or "", series_instance_uid or "", kind]
        )
    )


def ordered_sources(result: SeriesTriageResult, datasets: Sequence[Dataset]) -> list[Dataset]:
    """Source datasets in the result's slice order (frame i of a SEG is slice i)."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    missing = [uid for uid in result.sop_instance_uids if uid not in by_uid]
    if missing:
        raise SourceMismatchError(missing)
    return [by_uid[uid] for uid in result.sop_instance_uids]


def algorithm_id(card: ModelCard) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=card.name, version=card.version, manufacturer=card.manufacturer)


def observer_device(card: ModelCard) -> hd.sr.ObserverContext:
    """The model version as the SR's observer device (Device Observer Name is ``name@version``)."""
    attributes = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=result_uid(card, None, "device"),
        name=card.key,
        manufacturer_name=card.manufacturer,
        model_name=card.name,
        serial_number=card.version,
    )
    return hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=attributes)


def label_concept(card: ModelCard, label: str) -> hd.sr.CodedConcept:
    code = card.code_for(label)
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _rectangle(bbox: BoundingBox) -> NDArray[np.float32]:
    """Closed POLYLINE (column, row) around the box, in the SR's 2D image coordinates."""
    x0, y0 = float(bbox.x), float(bbox.y)
    x1, y1 = x0 + bbox.width, y0 + bbox.height
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)


def _evaluations(card: ModelCard, finding: Finding) -> dict[str, object]:
    """Content shared by both kinds of measurement group: finding type, algorithm, score, priority."""
    return {
        "tracking_identifier": hd.sr.TrackingIdentifier(
            uid=result_uid(card, finding.series_instance_uid, f"finding/{finding.label}"),
            identifier=finding.label,
        ),
        "finding_type": label_concept(card, finding.label),
        "algorithm_id": algorithm_id(card),
        "measurements": [hd.sr.Measurement(name=SCORE_CODE, value=finding.score, unit=codes.UCUM.NoUnits)],
        "qualitative_evaluations": [
            hd.sr.QualitativeEvaluation(name=PRIORITY_CODE, value=PRIORITY_VALUES[finding.priority])
        ],
    }


def measurement_group(
    card: ModelCard, finding: Finding, sources: dict[str, Dataset]
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations:
    """A planar ROI group when the finding has a box on a slice, else an image-level group."""
    content = _evaluations(card, finding)
    source = sources.get(finding.sop_instance_uid or "")
    if finding.bbox is not None and source is not None:
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=_rectangle(finding.bbox),
            source_image=hd.sr.SourceImageForRegion.from_source_image(source),
        )
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **content)  # type: ignore[arg-type]
    images = [source] if source is not None else list(sources.values())
    refs = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in images]
    return hd.sr.MeasurementsAndQualitativeEvaluations(source_images=refs, **content)  # type: ignore[arg-type]


def write_sr(
    result: SeriesTriageResult,
    card: ModelCard,
    source_datasets: Sequence[Dataset],
    series_number: int = DEFAULT_SR_SERIES_NUMBER,
    instance_number: int = 1,
) -> hd.sr.Comprehensive3DSR:
    """Findings of one series as a TID 1500 Measurement Report; each finding is one measurement group."""
    sources = ordered_sources(result, source_datasets)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    groups = [measurement_group(card, f, by_uid) for f in result.findings]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer_device(card)),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=groups or None,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=sources,
        content=report,
        series_instance_uid=result_uid(card, result.series_instance_uid, "sr-series"),
        series_number=series_number,
        sop_instance_uid=result_uid(card, result.series_instance_uid, "sr"),
        instance_number=instance_number,
        manufacturer=card.manufacturer,
        series_description=f"AI triage {card.key}"[:64],
    )


def segment_description(card: ModelCard, number: int, label: str) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=label_concept(card, label),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=card.name, family=codes.cid7162.ArtificialIntelligence, version=card.version
        ),
        tracking_uid=result_uid(card, None, f"segment/{label}"),
        tracking_id=label[:64],
    )


def write_seg(
    result: SeriesTriageResult,
    card: ModelCard,
    source_datasets: Sequence[Dataset],
    series_number: int = DEFAULT_SEG_SERIES_NUMBER,
    instance_number: int = 1,
) -> hd.seg.Segmentation:
    """Binary DICOM SEG with one segment per finding that has a mask; frames reference source slices."""
    masked = [f for f in result.findings if f.mask is not None and f.mask.any()]
    if not masked:
        raise NothingToWriteError(card.key, "no finding has a non-empty mask")
    sources = ordered_sources(result, source_datasets)
    pixels = np.stack([np.asarray(f.mask, dtype=np.uint8) for f in masked], axis=-1)
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(card, i + 1, f.label) for i, f in enumerate(masked)],
        series_instance_uid=result_uid(card, result.series_instance_uid, "seg-series"),
        series_number=series_number,
        sop_instance_uid=result_uid(card, result.series_instance_uid, "seg"),
        instance_number=instance_number,
        manufacturer=card.manufacturer,
        manufacturer_model_name=card.name,
        software_versions=card.version,
        device_serial_number=(card.onnx_sha256 or "unregistered")[:16],
        series_description=f"AI segmentation {card.key}"[:64],
    )
