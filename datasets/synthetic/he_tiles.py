"""H&E-like tiles built the way the stain works: optical density from haematoxylin and eosin.

Why colour deconvolution rather than painting RGB: a pixel is ``I0 * 10**-(c_H * v_H + c_E * v_E)``
(Beer-Lambert with Ruifrok & Johnston stain vectors, as in ``skimage.color.hed2rgb``), so colours,
stain variation and the H channel a model or a test separates out behave like real slides.

Classes differ in morphology, not colour: "tumour" has dense, large, pleomorphic, hyperchromatic
nuclei in pale cytoplasm; "normal" has sparse, small, regular nuclei in eosinophilic fibrous
stroma. Stain vectors and brightness are jittered per tile for both classes, so colour alone
does not separate them. Sizes are in micrometres, so tiles at any mpp show the same tissue.

The nucleus sampler and painter are shared with ``slides.py`` (same tissue at slide scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

TileClass = Literal["tumour", "normal"]
TILE_CLASSES: tuple[TileClass, ...] = ("normal", "tumour")

#: Ruifrok & Johnston optical-density vectors (rows of skimage's ``rgb_from_hed``).
HAEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29])
EOSIN_OD = np.array([0.07, 0.99, 0.11])


@dataclass(frozen=True)
class StainMatrix:
    """Unit OD vectors for haematoxylin and eosin; jitter them to mimic lab-to-lab variation."""

    haematoxylin: np.ndarray
    eosin: np.ndarray

    @classmethod
    def default(cls) -> StainMatrix:
        """Ruifrok & Johnston vectors, normalised."""
        return cls(_unit(HAEMATOXYLIN_OD), _unit(EOSIN_OD))

    def jittered(self, rng: np.random.Generator, amount: float = 0.05) -> StainMatrix:
        """Perturb each vector by ``amount`` (relative) and renormalise."""
        h = self.haematoxylin + rng.normal(0.0, amount, 3)
        e = self.eosin + rng.normal(0.0, amount, 3)
        return StainMatrix(_unit(np.abs(h)), _unit(np.abs(e)))

    def as_matrix(self) -> np.ndarray:
        """2 x 3 matrix, rows H and E."""
        return np.stack([self.haematoxylin, self.eosin])


@dataclass(frozen=True)
class NucleusStyle:
    """Per-class nucleus statistics in micrometres and stain concentration (OD units)."""

    density_per_mm2: tuple[float, float]
    radius_um: tuple[float, float]  # log-uniform range of the mean radius
    elongation: tuple[float, float]  # major/minor axis ratio
    irregularity: tuple[float, float]  # amplitude of radial harmonics (pleomorphism)
    concentration: tuple[float, float]  # haematoxylin OD at the nucleus centre


NORMAL_STYLE = NucleusStyle((1500.0, 3500.0), (2.0, 3.2), (1.0, 2.2), (0.0, 0.05), (0.45, 0.8))
TUMOUR_STYLE = NucleusStyle((4000.0, 8000.0), (3.0, 5.5), (1.0, 1.5), (0.06, 0.2), (0.85, 1.4))


@dataclass(frozen=True)
class Nuclei:
    """Nuclei as parallel arrays; positions in pixels of the frame they were sampled for."""

    y: np.ndarray
    x: np.ndarray
    radius_px: np.ndarray
    elongation: np.ndarray
    angle: np.ndarray
    irregularity: np.ndarray
    phase: np.ndarray  # (n, 3) phases of harmonics 2..4
    concentration: np.ndarray

    def __len__(self) -> int:
        return int(self.y.size)

    def select(self, keep: np.ndarray) -> Nuclei:
        """Subset by boolean mask or index array."""
        return Nuclei(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: list[Nuclei]) -> Nuclei:
        """Join several samples (e.g. tumour and normal areas of one slide)."""
        fields = Nuclei.__dataclass_fields__
        if not parts:
            return Nuclei(*(np.zeros((0, 3) if f == "phase" else 0) for f in fields))
        return Nuclei(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


@dataclass(frozen=True)
class HETile:
    """One tile with its ground truth: label, nuclei mask and count."""

    image: np.ndarray  # uint8 (h, w, 3)
    label: TileClass
    nuclei_mask: np.ndarray  # bool (h, w)
    n_nuclei: int


def sample_nuclei(
    rng: np.random.Generator,
    style: NucleusStyle,
    *,
    area_px: tuple[float, float, float, float],
    mpp: float,
    density_scale: float = 1.0,
) -> Nuclei:
    """Poisson-sample nuclei in the box ``(y0, x0, y1, x1)`` (pixels at ``mpp``)."""
    y0, x0, y1, x1 = area_px
    area_mm2 = max(y1 - y0, 0.0) * max(x1 - x0, 0.0) * (mpp * 1e-3) ** 2
    density = float(rng.uniform(*style.density_per_mm2)) * density_scale
    n = int(rng.poisson(density * area_mm2))
    mean_r = np.exp(rng.uniform(np.log(style.radius_um[0]), np.log(style.radius_um[1]), n))
    return Nuclei(
        y=rng.uniform(y0, y1, n),
        x=rng.uniform(x0, x1, n),
        radius_px=mean_r / mpp,
        elongation=rng.uniform(*style.elongation, n),
        angle=rng.uniform(0.0, np.pi, n),
        irregularity=rng.uniform(*style.irregularity, n),
        phase=rng.uniform(0.0, 2.0 * np.pi, (n, 3)),
        concentration=rng.uniform(*style.concentration, n),
    )


def paint_nuclei(h: np.ndarray, nuclei: Nuclei, *, origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Paint nuclei into the haematoxylin field ``h`` (in place); returns the nuclei mask.

    ``origin`` is the frame position of ``h[0, 0]``, so a slide strip paints the slice of global
    nuclei that overlaps it and neighbouring strips join without seams.
    """
    mask = np.zeros(h.shape, bool)
    oy, ox = origin
    for i in range(len(nuclei)):
        _paint_one(h, mask, nuclei, i, nuclei.y[i] - oy, nuclei.x[i] - ox)
    return mask


def _paint_one(h: np.ndarray, mask: np.ndarray, nuc: Nuclei, i: int, cy: float, cx: float) -> None:
    r_max = float(nuc.radius_px[i] * np.sqrt(nuc.elongation[i]) * (1.0 + 3.0 * nuc.irregularity[i])) + 1.0
    i0, i1 = max(int(cy - r_max), 0), min(int(cy + r_max) + 2, h.shape[0])
    j0, j1 = max(int(cx - r_max), 0), min(int(cx + r_max) + 2, h.shape[1])
    if i0 >= i1 or j0 >= j1:
        return
    dy = np.arange(i0, i1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(j0, j1, dtype=np.float32)[None, :] - np.float32(cx)
    ca, sa = np.cos(nuc.angle[i]), np.sin(nuc.angle[i])
    u, v = dx * ca + dy * sa, -dx * sa + dy * ca
    e = np.sqrt(nuc.elongation[i])
    u, v = u / e, v * e
    dist = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    harmonics = sum(np.cos(k * theta + nuc.phase[i, k - 2]) for k in (2, 3, 4))
    radius = nuc.radius_px[i] * (1.0 + nuc.irregularity[i] * harmonics)
    inside = dist <= radius
    # Chromatin: darker rim and centre-to-edge falloff, so a nucleus is not a flat disc.
    rel = np.clip(dist / np.maximum(radius, 1e-3), 0.0, 1.0)
    value = nuc.concentration[i] * (0.75 + 0.35 * rel**4)
    patch = h[i0:i1, j0:j1]
    np.maximum(patch, np.where(inside, value, 0.0), out=patch)
    mask[i0:i1, j0:j1] |= inside


def compose_he(h: np.ndarray, e: np.ndarray, stains: StainMatrix, *, background: float = 245.0) -> np.ndarray:
    """Beer-Lambert: concentrations (OD) of H and E -> uint8 RGB under illumination ``background``."""
    od = h[..., None] * stains.haematoxylin.astype(np.float32) + e[..., None] * stains.eosin.astype(
        np.float32
    )
    rgb = np.float32(background) * np.power(np.float32(10.0), -od)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def separate_he(rgb: np.ndarray, stains: StainMatrix | None = None, background: float = 245.0) -> np.ndarray:
    """Inverse of ``compose_he`` by least squares: (h, w, 2) concentrations of H and E.

    Tests and tissue detectors use it to measure haematoxylin (nuclear) content honestly.
    """
    stains = stains or StainMatrix.default()
    od = -np.log10(np.clip(rgb.astype(np.float32), 1.0, 255.0) / np.float32(background))
    pinv = np.linalg.pinv(stains.as_matrix()).astype(np.float32)  # (3, 2)
    return np.maximum(od @ pinv, 0.0)


def stroma_field(rng: np.random.Generator, shape: tuple[int, int], mpp: float) -> np.ndarray:
    """Eosin concentration of fibrous stroma: oriented fibres plus coarse variation, about 0.15-0.4."""
    fibre_sigma = (max(0.6 / mpp, 0.5), max(4.0 / mpp, 1.0))
    noise = rng.standard_normal(shape).astype(np.float32)
    fibres = ndimage.gaussian_filter(noise, fibre_sigma if rng.random() < 0.5 else fibre_sigma[::-1])
    fibres /= float(fibres.std()) + 1e-6
    coarse = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 12.0 / mpp * 0.5)
    coarse /= float(coarse.std()) + 1e-6
    return np.clip(0.28 + 0.06 * fibres + 0.05 * coarse, 0.05, 0.9)


def generate_he_tile(
    rng: np.random.Generator,
    label: TileClass,
    *,
    size: int = 128,
    mpp: float = 0.5,
    stain_jitter: float = 0.05,
) -> HETile:
    """One tile of class ``label`` with its nuclei mask (the ground truth behind the label)."""
    stains = StainMatrix.default().jittered(rng, stain_jitter)
    style = TUMOUR_STYLE if label == "tumour" else NORMAL_STYLE
    margin = 8.0 / mpp
    nuclei = sample_nuclei(rng, style, area_px=(-margin, -margin, size + margin, size + margin), mpp=mpp)
    h = np.zeros((size, size), np.float32)
    mask = paint_nuclei(h, nuclei)
    e = _background_eosin(rng, label, (size, size), mpp)
    h = _finish_haematoxylin(rng, h, label, mpp)
    e = np.where(mask, e * 0.5, e)
    lumen = _lumens(rng, (size, size), mpp, fraction=0.08 if label == "normal" else 0.03)
    h, e = np.where(lumen & ~mask, h * 0.1, h), np.where(lumen & ~mask, e * 0.1, e)
    brightness = float(rng.uniform(232.0, 250.0))
    image = compose_he(h, e, stains, background=brightness)
    image = _add_pixel_noise(rng, image)
    return HETile(image, label, mask, int(_count_inside(nuclei, size)))


def generate_he_tiles(
    rng: np.random.Generator,
    n: int,
    *,
    size: int = 64,
    mpp: float = 0.5,
    tumour_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """A batch for classification: ``(images uint8 (n, size, size, 3), labels int64 (n,))``.

    Label 1 = tumour, 0 = normal (index into ``TILE_CLASSES``).
    """
    labels = (rng.random(n) < tumour_fraction).astype(np.int64)
    images = np.empty((n, size, size, 3), np.uint8)
    for i, y in enumerate(labels):
        images[i] = generate_he_tile(rng, TILE_CLASSES[int(y)], size=size, mpp=mpp).image
    return images, labels


def _background_eosin(
    rng: np.random.Generator, label: TileClass, shape: tuple[int, int], mpp: float
) -> np.ndarray:
    stroma = stroma_field(rng, shape, mpp)
    if label == "normal":
        return stroma
    # Tumour: sheets of cells with pale, slightly granular cytoplasm replace most stroma.
    cytoplasm = 0.17 + 0.04 * ndimage.gaussian_filter(
        rng.standard_normal(shape).astype(np.float32), 1.0 / mpp
    )
    return (0.75 * cytoplasm + 0.25 * stroma).astype(np.float32)


def _finish_haematoxylin(rng: np.random.Generator, h: np.ndarray, label: TileClass, mpp: float) -> np.ndarray:
    """Chromatin granularity, a faint haematoxylin background, and a slight optical blur."""
    grain = 1.0 + 0.18 * rng.standard_normal(h.shape).astype(np.float32)
    h = h * grain
    h += 0.06 if label == "tumour" else 0.03
    return ndimage.gaussian_filter(h, 0.25 / mpp).astype(np.float32)


def _lumens(rng: np.random.Generator, shape: tuple[int, int], mpp: float, fraction: float) -> np.ndarray:
    """Empty spaces (lumens, fat, tears): the top ``fraction`` of a smooth random field."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 6.0 / mpp * 0.5)
    return field > np.quantile(field, 1.0 - fraction)


def _add_pixel_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    noisy = image.astype(np.int16) + rng.normal(0.0, 3.0, image.shape).astype(np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _count_inside(nuclei: Nuclei, size: int) -> int:
    inside = (nuclei.y >= 0) & (nuclei.y < size) & (nuclei.x >= 0) & (nuclei.x < size)
    return int(inside.sum())


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, np.float64) / float(np.linalg.norm(v))
