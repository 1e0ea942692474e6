"""Chest-radiograph-like 2D images (PA view) with and without focal opacities, and a DICOM writer.

Why this construction: a radiograph is a projection, so the image is built as summed attenuation
(body, lungs, mediastinum and heart, diaphragm, spine, ribs, clavicles, lung markings) and then
displayed MONOCHROME2 (bone bright, lung dark). Opacities are added attenuation in a lung field;
ribs and vessel markings are also local brightenings, so a classifier has to learn the round,
soft-edged blob rather than "anything bright in the lung". Ground-truth mask: pixels where an
opacity adds at least half its peak (its full-width-at-half-maximum footprint).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation
from scipy import ndimage

from datasets.synthetic.dicom_io import (
    DicomSubject,
    apply_extra_attributes,
    base_dataset,
    make_uid,
    save_part10,
)

RadiographModality = Literal["DX", "CR"]
_SOP_CLASS = {"DX": DigitalXRayImageStorageForPresentation, "CR": ComputedRadiographyImageStorage}
BITS_STORED = 12


@dataclass(frozen=True)
class Opacity:
    """A focal opacity: Gaussian blob in pixels, amplitude in attenuation units."""

    center: tuple[float, float]  # (row, col)
    sigma: tuple[float, float]
    amplitude: float

    def bbox(self) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1) of the half-maximum ellipse (1.1774 sigma)."""
        ry, rx = 1.1774 * self.sigma[0], 1.1774 * self.sigma[1]
        cy, cx = self.center
        return int(cy - ry), int(cx - rx), int(np.ceil(cy + ry)), int(np.ceil(cx + rx))


@dataclass(frozen=True)
class Radiograph:
    """A rendered radiograph: stored pixels, ground-truth mask and label."""

    image: np.ndarray  # uint16, 12 bits used, MONOCHROME2
    opacity_mask: np.ndarray  # uint8
    opacities: tuple[Opacity, ...]
    pixel_spacing_mm: float

    @property
    def has_opacity(self) -> bool:
        """Image-level label."""
        return bool(self.opacities)


def generate_radiograph(
    rng: np.random.Generator,
    *,
    size: int = 256,
    has_opacity: bool | None = None,
    n_opacities: tuple[int, int] = (1, 3),
    amplitude: tuple[float, float] = (0.08, 0.3),
    noise: float = 0.012,
) -> Radiograph:
    """One PA chest image of ``size`` x ``size`` (430 mm detector). ``has_opacity=None``: coin flip."""
    if has_opacity is None:
        has_opacity = bool(rng.random() < 0.5)
    yy, xx = _grid(size)
    lungs = _lung_fields(rng, yy, xx)
    attenuation = _anatomy(rng, yy, xx, lungs, size)
    opacities: list[Opacity] = []
    mask = np.zeros((size, size), np.uint8)
    if has_opacity:
        for _ in range(int(rng.integers(n_opacities[0], n_opacities[1] + 1))):
            op = _draw_opacity(rng, lungs, size, amplitude)
            blob = _gaussian(yy * size, xx * size, op)
            attenuation += op.amplitude * blob
            mask[blob >= 0.5] = 1
            opacities.append(op)
    image = _detector(rng, attenuation, noise, size)
    return Radiograph(image, mask, tuple(opacities), 430.0 / size)


def generate_radiographs(
    rng: np.random.Generator, n: int, *, size: int = 64, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """A batch for classification: ``(images float32 (n, size, size) in [0, 1], labels int64)``."""
    labels = (rng.random(n) < 0.5).astype(np.int64)
    images = np.empty((n, size, size), np.float32)
    for i, label in enumerate(labels):
        r = generate_radiograph(rng, size=size, has_opacity=bool(label), **options)
        images[i] = r.image.astype(np.float32) / (2**BITS_STORED - 1)
    return images, labels


def write_radiograph_dicom(
    radiograph: Radiograph,
    path: str | Path,
    *,
    modality: RadiographModality = "DX",
    patient_name: str = "SYNTHETIC^PATIENT",
    patient_id: str = "SYN0001",
    subject: DicomSubject | None = None,
    series_uid: str | None = None,
    uid_seed: int | str | None = None,
    extra_attributes: Mapping[str, Any] | None = None,
) -> Path:
    """Write a DX (For Presentation) or CR Part-10 instance; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    subject = subject or DicomSubject(
        patient_name=patient_name, patient_id=patient_id, study_uid=make_uid(uid_seed, "study")
    )
    series_uid = series_uid or make_uid(uid_seed, subject.study_uid, "series")
    ds = base_dataset(
        sop_class_uid=_SOP_CLASS[modality],
        sop_instance_uid=make_uid(uid_seed, series_uid, "instance"),
        subject=subject,
        modality=modality,
        series_uid=series_uid,
        series_number=1,
        series_description=f"Synthetic chest {modality} PA",
    )
    _set_projection_image(ds, radiograph, modality)
    apply_extra_attributes(ds, extra_attributes)
    save_part10(ds, out)
    return out


def _set_projection_image(ds: Any, radiograph: Radiograph, modality: RadiographModality) -> None:
    spacing = f"{radiograph.pixel_spacing_mm:.6g}"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.InstanceNumber = 1
    ds.KVP = 120
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PixelSpacing = [spacing, spacing]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.DetectorType = "DIRECT"
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = radiograph.image.shape
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = radiograph.image.astype("<u2").tobytes()


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates in [0, 1): rows top to bottom, columns image left to right."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return axis[:, None] * np.ones((1, size), np.float32), np.ones((size, 1), np.float32) * axis[None, :]


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _lung_fields(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Two lung fields; the image-right one (patient left) is narrower (heart)."""
    j = lambda: float(rng.uniform(-0.015, 0.015))  # noqa: E731
    right = _ellipse(yy, xx, 0.46 + j(), 0.32 + j(), 0.3 + j(), 0.13 + j())
    left = _ellipse(yy, xx, 0.46 + j(), 0.68 + j(), 0.3 + j(), 0.12 + j())
    return (right | left) & (yy > 0.14)


def _anatomy(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, lungs: np.ndarray, size: int
) -> np.ndarray:
    att = np.where(_ellipse(yy, xx, 0.55, 0.5, 0.6, 0.42), 0.55, 0.02).astype(np.float32)
    att[lungs] -= 0.33
    heart = _ellipse(yy, xx, 0.6, 0.57, 0.16 + float(rng.uniform(-0.02, 0.03)), 0.14)
    att[heart & (yy > 0.45)] += 0.25
    att[_ellipse(yy, xx, 0.95, 0.5, 0.25, 0.42) & (yy > 0.72)] += 0.2  # diaphragm / abdomen
    att[np.abs(xx - 0.5) < 0.035] += 0.3  # spine
    att += _ribs(rng, yy, xx) * (att > 0.1)
    att += _lung_markings(rng, size) * lungs
    return ndimage.gaussian_filter(att, size / 256.0)


def _ribs(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Posterior ribs as curved bands sloping down laterally, plus two clavicles."""
    out = np.zeros_like(yy)
    spacing = float(rng.uniform(0.055, 0.065))
    for i in range(10):
        y0 = 0.16 + i * spacing
        centre = y0 + 1.2 * (xx - 0.5) ** 2 + 0.05 * np.abs(xx - 0.5)
        band = np.abs(yy - centre) < 0.012
        out[band & (np.abs(xx - 0.5) > 0.04) & (np.abs(xx - 0.5) < 0.42)] += 0.09
    clavicle = np.abs(yy - (0.15 - 0.25 * np.abs(xx - 0.5) + 0.1)) < 0.013
    out[clavicle & (np.abs(xx - 0.5) > 0.05) & (np.abs(xx - 0.5) < 0.3)] += 0.15
    return out


def _lung_markings(rng: np.random.Generator, size: int) -> np.ndarray:
    """Vessel-like texture: smoothed noise, positive part only."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), size / 128.0)
    noise /= float(noise.std()) + 1e-6
    return np.clip(noise - 1.0, 0.0, None) * 0.04


def _draw_opacity(
    rng: np.random.Generator, lungs: np.ndarray, size: int, amplitude: tuple[float, float]
) -> Opacity:
    rows, cols = np.nonzero(ndimage.binary_erosion(lungs, iterations=max(size // 20, 1)))
    if rows.size == 0:
        rows, cols = np.nonzero(lungs)
    k = int(rng.integers(0, rows.size))
    sigma = float(rng.uniform(0.015, 0.05)) * size
    return Opacity(
        center=(float(rows[k]), float(cols[k])),
        sigma=(sigma * float(rng.uniform(0.8, 1.25)), sigma),
        amplitude=float(rng.uniform(*amplitude)),
    )


def _gaussian(yy: np.ndarray, xx: np.ndarray, op: Opacity) -> np.ndarray:
    dy = (yy - op.center[0]) / op.sigma[0]
    dx = (xx - op.center[1]) / op.sigma[1]
    return np.exp(-0.5 * (dy * dy + dx * dx)).astype(np.float32)


def _detector(rng: np.random.Generator, attenuation: np.ndarray, noise: float, size: int) -> np.ndarray:
    """Attenuation -> 12-bit MONOCHROME2 with quantum-like noise and slight unsharpness."""
    signal = np.clip(attenuation, 0.0, 1.2) / 1.2
    signal = signal + rng.normal(0.0, noise, signal.shape).astype(np.float32)
    signal = ndimage.gaussian_filter(signal, size / 512.0)
    return np.clip(np.rint(signal * (2**BITS_STORED - 1)), 0, 2**BITS_STORED - 1).astype(np.uint16)
