"""Synthetic chest/upper-abdomen CT in Hounsfield units with lesions of known position and size.

Why a phantom object rather than one array: a 1,000 x 512 x 512 series is half a gigabyte, so
slices are rendered one at a time (deterministically, each slice from its own seeded noise) and
streamed into the DICOM writer. Anatomy is defined in millimetres, so any matrix size or spacing
gives the same patient.

The task is not trivial on purpose: lung vessels are round in cross-section like nodules (a model
must use their extent along z), lesion contrast goes down to 15 HU against liver, and there is
CT-like noise. Lesion masks are exact: a voxel is in the mask iff the lesion HU was painted there.

Volume index order is ``(z, y, x)``; index ``k`` grows towards the head (patient +z in LPS), so
sorting instances by position along the slice normal gives back the generator's order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.uid import CTImageStorage

from datasets.synthetic.dicom_io import (
    DicomSubject,
    apply_extra_attributes,
    base_dataset,
    make_uid,
    save_part10,
)

LesionSite = Literal["lung", "liver"]

HU_AIR = -1000.0
HU_FAT = -100.0
HU_SOFT_TISSUE = 40.0
HU_LUNG = -850.0
HU_LIVER = 60.0
HU_CORTICAL_BONE = 800.0
HU_CANCELLOUS_BONE = 250.0
HU_DISC = 80.0
HU_BLOOD = 45.0
HU_BLOOD_CONTRAST = 220.0

#: Fraction of the z extent (from the feet end) that is upper abdomen (liver), the rest is chest.
_ABDOMEN_FRACTION = 0.3


@dataclass(frozen=True)
class Lesion:
    """One ellipsoidal lesion, axis-aligned, in phantom millimetres (origin at the volume centre)."""

    center_mm: tuple[float, float, float]  # (z, y, x)
    radii_mm: tuple[float, float, float]  # (rz, ry, rx)
    hu: float
    site: LesionSite

    @property
    def volume_mm3(self) -> float:
        """Analytic volume; compare with mask voxel count x voxel volume."""
        rz, ry, rx = self.radii_mm
        return float(4.0 / 3.0 * np.pi * rz * ry * rx)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for labels files."""
        return {
            "center_mm": list(self.center_mm),
            "radii_mm": list(self.radii_mm),
            "hu": self.hu,
            "site": self.site,
            "volume_mm3": self.volume_mm3,
        }


@dataclass(frozen=True)
class _Ellipse:
    cy: float
    cx: float
    ry: float
    rx: float


@dataclass(frozen=True)
class _Vessel:
    """A straight tube through a lung: centre moves linearly with z, so it is round in every slice."""

    y0: float
    x0: float
    dy_dz: float
    dx_dz: float
    radius: float


@dataclass(frozen=True)
class CTPhantom:
    """An analytic patient: renders any slice in HU, with or without lesions and noise."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    seed: int
    body: _Ellipse
    fat_mm: float
    lungs: tuple[_Ellipse, _Ellipse]
    heart: _Ellipse
    liver: _Ellipse
    spine: _Ellipse
    aorta: _Ellipse
    aorta_hu: float
    vessels: tuple[_Vessel, ...]
    vertebra_period_mm: float
    lesions: tuple[Lesion, ...] = ()
    noise_hu: float = 12.0
    _axes: dict[str, np.ndarray] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def z_mm(self) -> np.ndarray:
        """Slice centres in phantom millimetres (origin at the volume centre)."""
        return _centred_axis(self.shape[0], self.spacing_mm[0])

    def render_slice(self, k: int, *, lesions: bool = True, noise: bool = True) -> np.ndarray:
        """Slice ``k`` as int16 HU."""
        img = self._anatomy_slice(k)
        if lesions:
            for lesion in self.lesions:
                self._paint_lesion(img, k, lesion, lesion.hu)
        if noise and self.noise_hu > 0:
            rng = np.random.default_rng([self.seed, 7919, k])
            img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(self.noise_hu)
        return np.clip(np.rint(img), -1024, 3071).astype(np.int16)

    def lesion_mask_slice(self, k: int) -> np.ndarray:
        """Binary lesion mask (uint8) for slice ``k``: exactly where lesion HU is painted."""
        mask = np.zeros(self.shape[1:], np.float32)
        for lesion in self.lesions:
            self._paint_lesion(mask, k, lesion, 1.0)
        return mask.astype(np.uint8)

    def iter_slices(self, *, lesions: bool = True, noise: bool = True) -> Iterator[np.ndarray]:
        """All slices in index order, one at a time (for streaming into the DICOM writer)."""
        for k in range(self.shape[0]):
            yield self.render_slice(k, lesions=lesions, noise=noise)

    def _yx(self) -> tuple[np.ndarray, np.ndarray]:
        if "y" not in self._axes:
            self._axes["y"] = _centred_axis(self.shape[1], self.spacing_mm[1])
            self._axes["x"] = _centred_axis(self.shape[2], self.spacing_mm[2])
        return self._axes["y"], self._axes["x"]

    def _z_fraction(self, k: int) -> float:
        return k / max(self.shape[0] - 1, 1)

    def _anatomy_slice(self, k: int) -> np.ndarray:
        y, x = self._yx()
        z = float(self.z_mm[k])
        img = np.full(self.shape[1:], HU_AIR, np.float32)
        body = self.body
        _fill(img, y, x, body, HU_FAT)
        inner = _Ellipse(body.cy, body.cx, body.ry - self.fat_mm, body.rx - self.fat_mm)
        _fill(img, y, x, inner, HU_SOFT_TISSUE)
        t = self._z_fraction(k)
        if t < _ABDOMEN_FRACTION:
            _fill(img, y, x, _scaled(self.liver, 1.0 - 0.5 * t / _ABDOMEN_FRACTION), HU_LIVER)
        else:
            self._paint_chest(img, y, x, z, t)
        self._paint_spine(img, y, x, z)
        _fill(img, y, x, self.aorta, self.aorta_hu)
        return img

    def _paint_chest(self, img: np.ndarray, y: np.ndarray, x: np.ndarray, z: float, t: float) -> None:
        # Lungs widen from the diaphragm, are widest mid-chest and narrow to the apex.
        u = (t - _ABDOMEN_FRACTION) / (1.0 - _ABDOMEN_FRACTION)
        scale = float(np.sqrt(max(0.0, 1.0 - (2.0 * u - 0.9) ** 2))) * 0.9 + 0.1
        for lung in self.lungs:
            _fill(img, y, x, _scaled(lung, scale), HU_LUNG)
        if u < 0.65:
            _fill(img, y, x, _scaled(self.heart, 1.0 - 0.5 * u), HU_SOFT_TISSUE)
        for vessel in self.vessels:
            cy, cx = vessel.y0 + vessel.dy_dz * z, vessel.x0 + vessel.dx_dz * z
            if any(_inside(_scaled(lung, scale * 0.95), cy, cx) for lung in self.lungs):
                _fill(img, y, x, _Ellipse(cy, cx, vessel.radius, vessel.radius), HU_BLOOD)

    def _paint_spine(self, img: np.ndarray, y: np.ndarray, x: np.ndarray, z: float) -> None:
        spine = self.spine
        in_disc = (z % self.vertebra_period_mm) < 0.2 * self.vertebra_period_mm
        _fill(img, y, x, spine, HU_CORTICAL_BONE)
        core = _scaled(spine, 0.8)
        _fill(img, y, x, core, HU_DISC if in_disc else HU_CANCELLOUS_BONE)
        if not in_disc:
            process = _Ellipse(spine.cy + 1.6 * spine.ry, spine.cx, 0.7 * spine.ry, 0.25 * spine.rx)
            _fill(img, y, x, process, HU_CORTICAL_BONE)

    def _paint_lesion(self, img: np.ndarray, k: int, lesion: Lesion, value: float) -> None:
        cz, cy, cx = lesion.center_mm
        rz, ry, rx = lesion.radii_mm
        dz = (float(self.z_mm[k]) - cz) / rz
        if abs(dz) >= 1.0:
            return
        s = float(np.sqrt(1.0 - dz * dz))
        y, x = self._yx()
        _fill(img, y, x, _Ellipse(cy, cx, ry * s, rx * s), value)


@dataclass(frozen=True)
class CTCase:
    """A rendered case: volume, exact lesion mask and labels (what a training item needs)."""

    volume_hu: np.ndarray  # int16 (z, y, x)
    lesion_mask: np.ndarray  # uint8 (z, y, x), 1 = lesion
    spacing_mm: tuple[float, float, float]
    lesions: tuple[Lesion, ...]
    phantom: CTPhantom

    @property
    def has_lesion(self) -> bool:
        """Case-level label: at least one lesion voxel in the volume."""
        return bool(self.lesion_mask.any())

    def labels(self) -> dict[str, Any]:
        """JSON-friendly labels: case label, lesion count and per-lesion description."""
        return {
            "has_lesion": self.has_lesion,
            "n_lesions": len(self.lesions),
            "lesions": [lesion.to_dict() for lesion in self.lesions],
        }


def make_ct_phantom(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int, int] = (64, 128, 128),
    spacing_mm: tuple[float, float, float] | None = None,
    n_lesions: int | tuple[int, int] = (0, 3),
    lesion_radius_mm: tuple[float, float] = (3.0, 15.0),
    lung_lesion_hu: tuple[float, float] = (-350.0, 60.0),
    liver_contrast_hu: tuple[float, float] = (15.0, 70.0),
    noise_hu: float = 12.0,
    vessels_per_lung: int = 12,
) -> CTPhantom:
    """Draw a random patient and its lesions.

    ``spacing_mm`` defaults to a 360 mm field of view in-plane and a 300 mm z coverage, so small
    test matrices still show the whole chest. ``n_lesions`` is a count or an inclusive range.
    Liver lesions are hypo- or hyper-dense by ``liver_contrast_hu`` (low contrast is the hard case).
    """
    nz, ny, nx = shape
    spacing = spacing_mm or (300.0 / nz, 360.0 / ny, 360.0 / nx)
    fov_y, fov_x = ny * spacing[1], nx * spacing[2]
    body = _Ellipse(
        cy=float(rng.uniform(-0.02, 0.04)) * fov_y,
        cx=float(rng.uniform(-0.02, 0.02)) * fov_x,
        ry=float(rng.uniform(0.30, 0.36)) * fov_y,
        rx=float(rng.uniform(0.42, 0.47)) * fov_x,
    )
    seed = int(rng.integers(0, 2**31 - 1))
    anatomy = _draw_anatomy(rng, body)
    lungs = anatomy["lungs"]
    vessels = tuple(v for lung in lungs for v in _draw_vessels(rng, lung, vessels_per_lung))
    phantom = CTPhantom(
        shape=shape,
        spacing_mm=spacing,
        seed=seed,
        body=body,
        fat_mm=float(rng.uniform(0.03, 0.07)) * body.rx,
        lungs=lungs,
        heart=anatomy["heart"],
        liver=anatomy["liver"],
        spine=anatomy["spine"],
        aorta=anatomy["aorta"],
        aorta_hu=HU_BLOOD_CONTRAST if rng.random() < 0.5 else HU_BLOOD,
        vessels=vessels,
        vertebra_period_mm=float(rng.uniform(24.0, 30.0)),
        noise_hu=noise_hu,
    )
    count = n_lesions if isinstance(n_lesions, int) else int(rng.integers(n_lesions[0], n_lesions[1] + 1))
    lesions = tuple(
        _draw_lesion(rng, phantom, lesion_radius_mm, lung_lesion_hu, liver_contrast_hu) for _ in range(count)
    )
    return dataclasses.replace(phantom, lesions=lesions)


def generate_ct_case(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int, int] = (64, 128, 128),
    spacing_mm: tuple[float, float, float] | None = None,
    n_lesions: int | tuple[int, int] = (0, 3),
    **phantom_options: Any,
) -> CTCase:
    """Render a whole case in memory (fine for training-size volumes; stream big ones instead)."""
    phantom = make_ct_phantom(rng, shape=shape, spacing_mm=spacing_mm, n_lesions=n_lesions, **phantom_options)
    volume = np.stack(list(phantom.iter_slices()))
    mask = np.stack([phantom.lesion_mask_slice(k) for k in range(shape[0])])
    return CTCase(volume, mask, phantom.spacing_mm, phantom.lesions, phantom)


@dataclass(frozen=True)
class CTSeriesInfo:
    """What was written: identities and paths in instance order (index ``k`` -> ``paths[k]``)."""

    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: tuple[str, ...]
    paths: tuple[Path, ...]


def write_ct_series(
    slices: np.ndarray | Iterable[np.ndarray],
    out_dir: str | Path,
    *,
    spacing_mm: tuple[float, float, float],
    patient_name: str = "SYNTHETIC^PATIENT",
    patient_id: str = "SYN0001",
    subject: DicomSubject | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "Synthetic CT",
    rescale_intercept: float = -1024.0,
    origin_mm: tuple[float, float, float] | None = None,
    uid_seed: int | str | None = None,
    extra_attributes: Mapping[str, Any] | None = None,
) -> CTSeriesInfo:
    """Write one CT Image Storage Part-10 file per slice (int16 stored values, HU via rescale).

    ``slices`` are HU in ``(y, x)`` (int16 or float), slice ``k`` at ``z = origin_z + k * dz``
    (ascending towards the head). ``subject`` overrides ``patient_name``/``patient_id`` and puts
    several series into one study. ``uid_seed`` makes every UID reproducible; without it UIDs
    are fresh. Speed: one small header per slice, pixels written as raw bytes (~1.5 ms/slice).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    subject = subject or DicomSubject(
        patient_name=patient_name, patient_id=patient_id, study_uid=make_uid(uid_seed, "study")
    )
    series_uid = series_uid or make_uid(uid_seed, subject.study_uid, "series", series_number)
    frame_uid = make_uid(uid_seed, series_uid, "frame")
    dz, dy, dx = spacing_mm
    uids: list[str] = []
    paths: list[Path] = []
    for k, hu in enumerate(slices):
        if origin_mm is None:
            origin_mm = (-dx * (hu.shape[1] - 1) / 2.0, -dy * (hu.shape[0] - 1) / 2.0, 0.0)
        sop_uid = make_uid(uid_seed, series_uid, "instance", k)
        position = (origin_mm[0], origin_mm[1], origin_mm[2] + k * dz)
        ds = base_dataset(
            sop_class_uid=CTImageStorage,
            sop_instance_uid=sop_uid,
            subject=subject,
            modality="CT",
            series_uid=series_uid,
            series_number=series_number,
            series_description=series_description,
        )
        _set_ct_image(ds, hu, k, position, (dy, dx), dz, frame_uid, rescale_intercept)
        apply_extra_attributes(ds, extra_attributes)
        path = out / f"CT{k + 1:05d}.dcm"
        save_part10(ds, path)
        uids.append(sop_uid)
        paths.append(path)
    return CTSeriesInfo(subject.study_uid, series_uid, frame_uid, tuple(uids), tuple(paths))


def _set_ct_image(
    ds: Any,
    hu: np.ndarray,
    k: int,
    position: tuple[float, float, float],
    pixel_spacing: tuple[float, float],
    thickness: float,
    frame_uid: str,
    intercept: float,
) -> None:
    stored = np.clip(np.rint(np.asarray(hu, np.float32) - intercept), -32768, 32767).astype("<i2")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BodyPartExamined = "CHEST"
    ds.KVP = 120
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = k + 1
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [_ds_float(v) for v in position]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = _ds_float(position[2])
    ds.SliceThickness = _ds_float(thickness)
    ds.PixelSpacing = [_ds_float(pixel_spacing[0]), _ds_float(pixel_spacing[1])]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = _ds_float(intercept)
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.AcquisitionDate = ds.StudyDate
    ds.AcquisitionTime = dt.time(12, 0).strftime("%H%M%S")
    ds.PixelData = stored.tobytes()


def _ds_float(value: float) -> str:
    """DS strings are at most 16 characters; ``repr`` of a float can be longer."""
    return f"{value:.6g}"


def _draw_anatomy(rng: np.random.Generator, body: _Ellipse) -> dict[str, Any]:
    """Organ ellipses relative to the body: image +x is patient left, +y is posterior (LPS)."""
    lung_rx, lung_ry = 0.36 * body.rx, 0.72 * body.ry
    lung_y = body.cy - 0.05 * body.ry
    jitter = lambda: float(rng.uniform(0.95, 1.05))  # noqa: E731
    lungs = (
        _Ellipse(lung_y, body.cx - 0.48 * body.rx, lung_ry * jitter(), lung_rx * jitter()),
        _Ellipse(lung_y, body.cx + 0.48 * body.rx, lung_ry * jitter(), lung_rx * 0.92 * jitter()),
    )
    spine_r = 0.11 * body.rx
    return {
        "lungs": lungs,
        "heart": _Ellipse(body.cy - 0.2 * body.ry, body.cx + 0.05 * body.rx, 0.4 * body.ry, 0.2 * body.rx),
        "liver": _Ellipse(body.cy - 0.05 * body.ry, body.cx - 0.3 * body.rx, 0.65 * body.ry, 0.5 * body.rx),
        "spine": _Ellipse(body.cy + 0.62 * body.ry, body.cx, spine_r * 0.9, spine_r),
        "aorta": _Ellipse(body.cy + 0.35 * body.ry, body.cx + 0.12 * body.rx, 0.07 * body.rx, 0.07 * body.rx),
    }


def _draw_vessels(rng: np.random.Generator, lung: _Ellipse, count: int) -> list[_Vessel]:
    vessels = []
    for _ in range(count):
        r, a = float(np.sqrt(rng.uniform(0.0, 0.8))), float(rng.uniform(0.0, 2.0 * np.pi))
        vessels.append(
            _Vessel(
                y0=lung.cy + r * lung.ry * np.sin(a),
                x0=lung.cx + r * lung.rx * np.cos(a),
                dy_dz=float(rng.uniform(-0.15, 0.15)),
                dx_dz=float(rng.uniform(-0.15, 0.15)),
                radius=float(rng.uniform(1.0, 3.0)),
            )
        )
    return vessels


def _draw_lesion(
    rng: np.random.Generator,
    phantom: CTPhantom,
    radius_mm: tuple[float, float],
    lung_hu: tuple[float, float],
    liver_contrast: tuple[float, float],
) -> Lesion:
    """Place a lesion wholly inside a lung (chest slices) or the liver (abdomen slices)."""
    z = phantom.z_mm
    site: LesionSite = "lung" if rng.random() < 0.6 else "liver"
    radius = float(np.exp(rng.uniform(np.log(radius_mm[0]), np.log(radius_mm[1]))))
    radii = (radius * float(rng.uniform(0.8, 1.2)), radius * float(rng.uniform(0.8, 1.2)), radius)
    min_rz = max(radii[0], 1.5 * phantom.spacing_mm[0])
    radii = (min_rz, radii[1], radii[2])
    if site == "lung":
        organ = phantom.lungs[int(rng.integers(0, 2))]
        t_lo, t_hi = _ABDOMEN_FRACTION + 0.2 * (1 - _ABDOMEN_FRACTION), 0.8
        organ = _scaled(organ, 0.75)
        hu = float(rng.uniform(*lung_hu))
    else:
        organ = _scaled(phantom.liver, 0.6)
        t_lo, t_hi = 0.05, _ABDOMEN_FRACTION * 0.8
        sign = 1.0 if rng.random() < 0.5 else -1.0
        hu = HU_LIVER + sign * float(rng.uniform(*liver_contrast))
    cz = float(rng.uniform(z[0] + t_lo * (z[-1] - z[0]), z[0] + t_hi * (z[-1] - z[0])))
    a, r = float(rng.uniform(0.0, 2.0 * np.pi)), float(np.sqrt(rng.uniform(0.0, 1.0)))
    ry, rx = max(organ.ry - radii[1], 0.0), max(organ.rx - radii[2], 0.0)
    cy, cx = organ.cy + r * ry * np.sin(a), organ.cx + r * rx * np.cos(a)
    return Lesion((cz, float(cy), float(cx)), radii, hu, site)


def _centred_axis(n: int, spacing: float) -> np.ndarray:
    return ((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * spacing).astype(np.float32)


def _scaled(e: _Ellipse, s: float) -> _Ellipse:
    return _Ellipse(e.cy, e.cx, e.ry * s, e.rx * s)


def _inside(e: _Ellipse, y: float, x: float) -> bool:
    return ((y - e.cy) / e.ry) ** 2 + ((x - e.cx) / e.rx) ** 2 <= 1.0


def _fill(img: np.ndarray, y: np.ndarray, x: np.ndarray, e: _Ellipse, value: float) -> None:
    """Paint an ellipse, touching only its bounding box (most structures are small)."""
    if e.ry <= 0 or e.rx <= 0:
        return
    i0, i1 = np.searchsorted(y, [e.cy - e.ry, e.cy + e.ry])
    j0, j1 = np.searchsorted(x, [e.cx - e.rx, e.cx + e.rx])
    if i0 >= i1 or j0 >= j1:
        return
    yy = ((y[i0:i1] - e.cy) / e.ry) ** 2
    xx = ((x[j0:j1] - e.cx) / e.rx) ** 2
    inside = (yy[:, None] + xx[None, :]) <= 1.0
    img[i0:i1, j0:j1][inside] = value
