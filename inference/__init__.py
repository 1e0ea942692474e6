"""AI triage pipelines: DICOM series and whole slides -> ONNX Runtime -> findings, SR and SEG.

Pure library: no FastAPI, SQLAlchemy or Celery. Pipelines take any
``numpy -> numpy`` callable as the network; ``SessionFactory`` turns a
registered model version into one.
"""

from inference.dicom_pipeline import run_dicom_series_triage
from inference.dicom_series import Volume, load_series
from inference.errors import (
    EmptySlideError,
    InferenceError,
    InputSpecError,
    NoApplicableModelError,
    OutputSpecError,
    ProviderUnavailableError,
    SeriesError,
    SlideError,
)
from inference.results import (
    BoundingBox,
    Finding,
    Priority,
    SeriesTriageResult,
    SlideTriageResult,
    TileScore,
    priority_for,
)
from inference.routing import SeriesMetadata, SlideMetadata, route
from inference.session import OnnxNetwork, SessionConfig, SessionFactory, create_session
from inference.sliding_window import sliding_window_inference
from inference.writers import NothingToWriteError, SourceMismatchError, write_seg, write_sr
from inference.wsi import TissueSpace
from inference.wsi_pipeline import run_slide_triage

__all__ = [
    "BoundingBox",
    "EmptySlideError",
    "Finding",
    "InferenceError",
    "InputSpecError",
    "NoApplicableModelError",
    "NothingToWriteError",
    "OnnxNetwork",
    "OutputSpecError",
    "Priority",
    "ProviderUnavailableError",
    "SeriesError",
    "SeriesMetadata",
    "SeriesTriageResult",
    "SessionConfig",
    "SessionFactory",
    "SlideError",
    "SlideMetadata",
    "SlideTriageResult",
    "SourceMismatchError",
    "TileScore",
    "TissueSpace",
    "Volume",
    "create_session",
    "load_series",
    "priority_for",
    "route",
    "run_dicom_series_triage",
    "run_slide_triage",
    "sliding_window_inference",
    "write_seg",
    "write_sr",
]
