"""The shipped demo models: install, routing, and end-to-end triage on freshly generated synthetic data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import polygon as draw_polygon

from datasets.synthetic.ct import generate_ct_case, write_ct_series
from datasets.synthetic.radiograph import generate_radiograph, write_radiograph_dicom
from datasets.synthetic.slides import generate_slide
from inference.dicom_pipeline import run_dicom_series_triage
from inference.routing import SeriesMetadata, SlideMetadata, route
from inference.session import OnnxNetwork, create_session
from inference.wsi_pipeline import run_slide_triage
from models.card import ModelState
from models.demo import DEMO_ROOT, demo_model_dirs, install_demo_models
from models.errors import ChecksumMismatchError
from models.registry import ModelRegistry, RegisteredModel
from training.evaluation import CPU_SESSION
from training.metrics import roc_auc
from training.recipe import SyntheticCT, load_recipe

CT, CXR, TILES = "demo-ct-lesion-seg", "demo-cxr-opacity", "demo-he-tumour-tiles"


@pytest.fixture(scope="module")
def demo_registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    registry = ModelRegistry(tmp_path_factory.mktemp("demo") / "registry")
    install_demo_models(registry)
    return registry


def _network(registry: ModelRegistry, model: RegisteredModel) -> OnnxNetwork:
    return OnnxNetwork(create_session(registry.load_onnx(model), CPU_SESSION))


def test_three_demo_models_ship_small_and_labelled() -> None:
    dirs = demo_model_dirs()
    assert sorted(d.parent.name for d in dirs) == [CT, CXR, TILES]
    assert sum((d / "model.onnx").stat().st_size for d in dirs) < 5_000_000
    for d in dirs:
        assert (d / "recipe.yaml").is_file()


def test_install_promotes_and_is_idempotent(demo_registry: ModelRegistry) -> None:
    cards = demo_registry.active_cards()
    assert sorted(c.name for c in cards) == [CT, CXR, TILES]
    for card in cards:
        assert card.not_for_clinical_use
        assert "DEMO MODEL" in card.intended_use
        assert card.metrics
    again = install_demo_models(demo_registry)
    assert {m.state for m in again} == {ModelState.ACTIVE}
    assert len(demo_registry.list_models()) == 3


def test_install_never_demotes_a_promoted_model(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    source = demo_model_dirs()[0]
    card = registry.register(
        _card_from(source).model_copy(update={"version": "2.0.0", "onnx_sha256": None}), source / "model.onnx"
    ).card
    registry.promote(card.name, "2.0.0")
    installed = {m.card.name: m for m in install_demo_models(registry)}
    assert installed[card.name].state is ModelState.CANDIDATE
    assert registry.active(card.name).card.version == "2.0.0"


def test_tampered_demo_file_is_refused(tmp_path: Path) -> None:
    source = demo_model_dirs()[0]
    copy = tmp_path / "demo" / source.parent.name / source.name
    shutil.copytree(source, copy)
    with (copy / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ChecksumMismatchError):
        install_demo_models(ModelRegistry(tmp_path / "registry"), root=tmp_path / "demo")


def _card_from(directory: Path):  # type: ignore[no-untyped-def]
    from models.card import load_card

    return load_card(directory / "card.json")


def test_routing(demo_registry: ModelRegistry) -> None:
    cards = demo_registry.active_cards()

    def names(metadata: SeriesMetadata | SlideMetadata) -> list[str]:
        return [c.name for c in route(metadata, cards)]

    assert names(SeriesMetadata("CT", "CHEST")) == [CT]
    assert names(SeriesMetadata("DX", "CHEST")) == [CXR]
    assert names(SeriesMetadata("CR", "Chest")) == [CXR]
    assert names(SeriesMetadata("MR", "CHEST")) == []
    assert names(SlideMetadata("H&E")) == [TILES]
    assert names(SlideMetadata("IHC-Ki67")) == []


def test_ct_series_triage_finds_the_lesions(demo_registry: ModelRegistry, tmp_path: Path) -> None:
    """Fresh synthetic CT (unseen seed) -> DICOM -> pipeline: the lesion mask overlaps the truth."""
    model = demo_registry.active(CT)
    data = load_recipe(DEMO_ROOT / CT / model.card.version / "recipe.yaml").data
    assert isinstance(data, SyntheticCT)
    rng = np.random.default_rng(2024)
    case = generate_ct_case(
        rng,
        shape=data.shape,
        spacing_mm=data.spacing_mm,
        n_lesions=3,
        lesion_radius_mm=data.lesion_radius_mm,
        lung_lesion_hu=data.lung_lesion_hu,
        liver_contrast_hu=data.liver_contrast_hu,
    )
    series = write_ct_series(case.volume_hu, tmp_path / "ct", spacing_mm=case.spacing_mm, uid_seed=1)
    result = run_dicom_series_triage(list(series.paths), model.card, _network(demo_registry, model))
    assert result.findings, "no lesion found"
    predicted = result.findings[0].mask
    assert predicted is not None
    truth = case.lesion_mask > 0
    dice = 2 * np.logical_and(predicted, truth).sum() / (predicted.sum() + truth.sum())
    assert dice >= 0.6
    assert result.scores["lesion"] >= model.card.thresholds_for("lesion").report


def test_radiograph_triage_separates_opacities(demo_registry: ModelRegistry, tmp_path: Path) -> None:
    model = demo_registry.active(CXR)
    network = _network(demo_registry, model)
    rng = np.random.default_rng(2025)
    targets, scores = [], []
    for i in range(12):
        image = generate_radiograph(rng, size=256, has_opacity=bool(i % 2))
        path = write_radiograph_dicom(image, tmp_path / f"dx{i}.dcm", modality="DX" if i < 6 else "CR")
        result = run_dicom_series_triage([path], model.card, network)
        targets.append(i % 2)
        scores.append(result.scores["opacity"])
    assert roc_auc(np.array(targets), np.array(scores)) >= 0.9


def test_slide_triage_finds_the_tumour(demo_registry: ModelRegistry, tmp_path: Path) -> None:
    model = demo_registry.active(TILES)
    network = _network(demo_registry, model)
    slide = generate_slide(np.random.default_rng(7), tmp_path, n_tumours=2)
    result = run_slide_triage(slide.slide.path, model.card, network, readers=2)
    assert result.findings, "tumour slide not flagged"
    tumour = _tumour_cells(slide.spec.tumours, result.heatmap.shape[1:], result.tile_size_level0)
    heat = result.heatmap[0][result.tissue_grid]
    inside = tumour[result.tissue_grid]
    assert inside.any()
    assert (~inside).any()
    assert roc_auc(inside.astype(np.int64), heat) >= 0.9
    best = result.findings[0].bbox
    assert best is not None
    assert tumour[int(best.y // result.tile_size_level0), int(best.x // result.tile_size_level0)]


def _tumour_cells(polygons: tuple, shape: tuple[int, ...], cell: float) -> np.ndarray:  # type: ignore[type-arg]
    """Grid cells whose centre lies in a tumour polygon."""
    out = np.zeros(shape, bool)
    for polygon in polygons:
        xy = polygon.vertices / cell - 0.5
        rr, cc = draw_polygon(xy[:, 1], xy[:, 0], shape=shape)
        out[rr, cc] = True
    return out
