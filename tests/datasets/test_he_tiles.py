"""H&E tiles: stain model round trip, tumour differs measurably from normal."""

from __future__ import annotations

import numpy as np

from datasets.synthetic.he_tiles import (
    StainMatrix,
    compose_he,
    generate_he_tile,
    generate_he_tiles,
    separate_he,
)


def test_stain_separation_inverts_composition() -> None:
    rng = np.random.default_rng(0)
    h = rng.uniform(0.0, 1.0, (16, 16)).astype(np.float32)
    e = rng.uniform(0.0, 0.6, (16, 16)).astype(np.float32)
    stains = StainMatrix.default()
    he = separate_he(compose_he(h, e, stains), stains)
    assert np.abs(he[..., 0] - h).mean() < 0.02
    assert np.abs(he[..., 1] - e).mean() < 0.02


def test_tumour_tiles_have_denser_darker_larger_nuclei() -> None:
    rng = np.random.default_rng(1)
    normal = [generate_he_tile(rng, "normal", size=96) for _ in range(12)]
    tumour = [generate_he_tile(rng, "tumour", size=96) for _ in range(12)]
    area_n = [t.nuclei_mask.mean() for t in normal]
    area_t = [t.nuclei_mask.mean() for t in tumour]
    assert min(area_t) > max(area_n)  # nuclear area fraction separates the classes
    assert np.mean([t.n_nuclei for t in tumour]) > 2 * np.mean([t.n_nuclei for t in normal])
    h_n = np.mean([separate_he(t.image)[..., 0].mean() for t in normal])
    h_t = np.mean([separate_he(t.image)[..., 0].mean() for t in tumour])
    assert h_t > 2 * h_n  # more haematoxylin, measured from pixels alone


def test_tiles_are_rgb_uint8_and_deterministic() -> None:
    a, la = generate_he_tiles(np.random.default_rng(9), 6, size=32)
    b, lb = generate_he_tiles(np.random.default_rng(9), 6, size=32)
    assert a.shape == (6, 32, 32, 3)
    assert a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.array_equal(la, lb)
