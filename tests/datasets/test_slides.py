"""Synthetic slides: OpenSlide opens them as Aperio; annotations land on tumour pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openslide
import pytest
from skimage.draw import polygon as draw_polygon

from datasets.synthetic.he_tiles import separate_he
from datasets.synthetic.slides import TUMOUR, SyntheticSlide, _level_dimensions, generate_slide


def test_openslide_reports_aperio_levels_mpp(small_slide: SyntheticSlide) -> None:
    with openslide.OpenSlide(str(small_slide.slide.path)) as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "aperio"
        assert slide.level_count == len(small_slide.slide.level_dimensions) == 2
        assert slide.level_dimensions == ((2048, 1536), (512, 384))
        assert slide.level_downsamples == pytest.approx((1.0, 4.0))
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25)
        assert slide.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER] == "40"
        assert set(slide.associated_images) == {"label", "macro"}


def test_level_dimensions_for_a_big_slide() -> None:
    assert _level_dimensions(20000, 20000, 256) == [(20000, 20000), (5000, 5000), (1250, 1250), (313, 313)]


def test_geojson_is_a_feature_collection_of_tumour_polygons(small_slide: SyntheticSlide) -> None:
    data = json.loads(small_slide.annotations_path.read_text())
    assert data["type"] == "FeatureCollection"
    assert len(data["features"]) == len(small_slide.spec.tumours) >= 2
    for feature in data["features"]:
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon"
        assert ring[0] == ring[-1]
        assert feature["properties"]["classification"]["name"] == "Tumor"


def test_polygons_land_on_tumour_ground_truth(small_slide: SyntheticSlide) -> None:
    spec = small_slide.spec
    classes = spec.class_map(4)
    for feature in json.loads(small_slide.annotations_path.read_text())["features"]:
        ring = np.asarray(feature["geometry"]["coordinates"][0]) / 4
        rr, cc = draw_polygon(ring[:, 1], ring[:, 0], shape=classes.shape)
        assert (classes[rr, cc] == TUMOUR).mean() > 0.97


def test_tumour_pixels_have_more_haematoxylin_than_normal_tissue(small_slide: SyntheticSlide) -> None:
    spec = small_slide.spec
    classes = spec.class_map(1)
    with openslide.OpenSlide(str(small_slide.slide.path)) as slide:
        region = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    h = separate_he(region)[..., 0]
    assert (classes == TUMOUR).sum() > 10_000
    assert h[classes == TUMOUR].mean() > 1.5 * h[classes == 1].mean()
    glass = region[classes == 0]
    assert glass.mean() > 230  # white background around tissue


def test_same_seed_same_pixels(tmp_path: Path) -> None:
    base = tmp_path
    paths = [
        generate_slide(
            np.random.default_rng(2), base / n, width=512, height=512, patient_name=None
        ).slide.path
        for n in ("a", "b")
    ]
    images = []
    for p in paths:
        with openslide.OpenSlide(str(p)) as slide:
            images.append(np.asarray(slide.read_region((0, 0), 0, (512, 512))))
            assert not slide.associated_images
    assert np.array_equal(images[0], images[1])
