"""The feedback loop: a registered version is fine-tuned on an export manifest into a new candidate."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from datasets.manifest import Manifest, ManifestItem, ModelRef, Provenance, write_manifest
from datasets.synthetic.radiograph import generate_radiograph, write_radiograph_dicom
from inference.session import OnnxNetwork, create_session
from models.card import ModelState
from models.demo import DEMO_ROOT, install_demo_models
from models.errors import ChecksumMismatchError, MissingWeightsError, ModelExistsError
from models.registry import ModelRegistry, RegisteredModel
from training.errors import ArchitectureMismatchError, InitFromError, InitFromMismatchError, RecipeError
from training.evaluation import CPU_SESSION
from training.recipe import load_recipe, parse_recipe
from training.train import TrainingResult, build_module, train

PARENT = "ft-cxr@0.0.1"
TINY = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]}
PARENT_RECIPE: dict[str, Any] = {
    "kind": "classification-2d",
    "architecture": {"name": "densenet121-2d", "overrides": TINY},
    "data": {"source": "synthetic-radiographs", "n_train": 64, "n_val": 24, "size": 64, "seed": 1},
    "input": {"spatial_dims": 2, "channels": 1, "patch_size": [32, 32], "normalization": "zscore"},
    "card": {"name": "ft-cxr", "version": "0.0.1", "labels": ["opacity"]},
    "optimizer": {"name": "adamw", "lr": 0.01},
    "epochs": 2,
    "batch_size": 16,
    "seed": 2,
}


def _child_recipe(manifest: Path, **changes: Any) -> dict[str, Any]:
    recipe = copy.deepcopy(PARENT_RECIPE)
    recipe["data"] = {"source": "manifest", "folder": str(manifest), "val_fraction": 0.34, "seed": 0}
    recipe["card"]["version"] = "0.0.2"
    recipe["init_from"] = PARENT
    recipe["optimizer"]["lr"] = 0.001
    recipe["epochs"] = 1
    recipe.update(changes)
    return recipe


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, Path, TrainingResult]:
    """A live parent in a temp registry, an export manifest of confirmed findings, one fine-tune run."""
    root = tmp_path_factory.mktemp("finetune")
    registry = ModelRegistry(root / "registry")
    train(parse_recipe(copy.deepcopy(PARENT_RECIPE)), root / "parent", registry)
    registry.promote("ft-cxr", "0.0.1")
    manifest = _write_export(root / "export", 24)
    child = train(parse_recipe(_child_recipe(manifest)), root / "child", registry)
    return registry, manifest, child


def _write_export(folder: Path, n: int) -> Path:
    """What ``hoichan export-training`` writes for DX findings: one DICOM per item plus manifest.json."""
    rng = np.random.default_rng(7)
    items = []
    for i in range(n):
        positive = bool(i % 2)
        image = generate_radiograph(rng, size=64, has_opacity=positive)
        write_radiograph_dicom(image, folder / f"item{i}" / "image.dcm", uid_seed=f"ft{i}")
        provenance = Provenance(
            case_pseudo_id=f"case-{i}",
            reviewer_pseudo_id="rev-1",
            proposed_by=ModelRef(name="ft-cxr", version="0.0.1"),
            decision="accepted" if i % 3 else "amended",
        )
        items.append(
            ManifestItem(
                id=f"f{i}",
                kind="dicom_series",
                files=(f"item{i}/image.dcm",),
                labels=("opacity",) if positive else ("normal",),
                provenance=provenance,
            )
        )
    write_manifest(folder, Manifest(created_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), items=tuple(items)))
    return folder


def _load_module(registry: ModelRegistry, model: RegisteredModel, recipe: dict[str, Any]) -> torch.nn.Module:
    import io

    module = build_module(parse_recipe(recipe))
    module.load_state_dict(torch.load(io.BytesIO(registry.load_weights(model)), weights_only=True))
    return module.eval()


def test_finetuned_version_is_candidate_with_parent(loop: tuple[ModelRegistry, Path, TrainingResult]) -> None:
    registry, _, child = loop
    model = child.registered
    assert model is not None
    assert model.key == "ft-cxr@0.0.2"
    assert model.state is ModelState.CANDIDATE
    assert model.card.parent == PARENT
    assert registry.active("ft-cxr").key == PARENT  # shadow: the live version is untouched
    assert model.has_weights and model.weights_path.is_file()
    assert child.extra["init_from"]["model"] == PARENT
    assert "auc" in child.extra["init_from"]["heldout_metrics_before"]
    registry.verify(model)


def test_finetuned_onnx_matches_its_registered_weights(
    loop: tuple[ModelRegistry, Path, TrainingResult],
) -> None:
    registry, manifest, child = loop
    assert child.registered is not None
    assert child.parity.max_abs_diff < child.parity.tolerance
    module = _load_module(registry, child.registered, _child_recipe(manifest))
    inputs = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(inputs)).numpy()
    actual = OnnxNetwork(create_session(registry.load_onnx(child.registered), CPU_SESSION))(inputs)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_finetune_started_from_the_parent_and_moved(loop: tuple[ModelRegistry, Path, TrainingResult]) -> None:
    registry, manifest, child = loop
    assert child.registered is not None
    parent = _load_module(registry, registry.get("ft-cxr", "0.0.1"), PARENT_RECIPE).state_dict()
    tuned = _load_module(registry, child.registered, _child_recipe(manifest)).state_dict()
    assert parent.keys() == tuned.keys()
    assert any(not torch.equal(parent[k], tuned[k]) for k in parent)
    assert (child.report_dir / "weights.pt").is_file()


def test_promote_makes_the_finetuned_version_live(
    tmp_path: Path, loop: tuple[ModelRegistry, Path, Any]
) -> None:
    registry, _, child = loop
    assert child.registered is not None
    copy_registry = ModelRegistry(tmp_path / "reg")
    for model in registry.list_models("ft-cxr"):
        copy_registry.register(model.card, model.onnx_path, model.weights_path)
    copy_registry.promote("ft-cxr", "0.0.1")
    copy_registry.promote("ft-cxr", "0.0.2")
    assert copy_registry.active("ft-cxr").card.parent == PARENT
    assert copy_registry.get("ft-cxr", "0.0.1").state is ModelState.CANDIDATE


def test_mismatched_overrides_are_a_clear_error(
    loop: tuple[ModelRegistry, Path, Any], tmp_path: Path
) -> None:
    registry, manifest, _ = loop
    recipe = _child_recipe(
        manifest, architecture={"name": "densenet121-2d", "overrides": {**TINY, "growth_rate": 6}}
    )
    recipe["card"]["version"] = "0.0.9"
    with pytest.raises(InitFromMismatchError) as info:
        train(parse_recipe(recipe), tmp_path / "out", registry)
    assert isinstance(info.value, ArchitectureMismatchError)
    assert info.value.parent == PARENT
    assert "shapes differ" in str(info.value) and "overrides" in str(info.value)
    assert not (registry.root / "ft-cxr" / "0.0.9").exists()


def test_other_architecture_is_a_clear_error(loop: tuple[ModelRegistry, Path, Any], tmp_path: Path) -> None:
    registry, manifest, _ = loop
    recipe = _child_recipe(manifest, architecture={"name": "efficientnet-b0-tiles"})
    recipe["card"]["version"] = "0.0.8"
    with pytest.raises(InitFromMismatchError, match="'densenet121-2d' network"):
        train(parse_recipe(recipe), tmp_path / "out", registry)


def test_version_without_weights_is_a_clear_error(
    loop: tuple[ModelRegistry, Path, Any], tmp_path: Path
) -> None:
    registry, manifest, _ = loop
    source = registry.get("ft-cxr", "0.0.1")
    onnx_only = ModelRegistry(tmp_path / "reg")
    onnx_only.register(source.card, source.onnx_path)  # no weights file: an ONNX-only version
    with pytest.raises(MissingWeightsError, match="registered from ONNX only"):
        train(parse_recipe(_child_recipe(manifest)), tmp_path / "out", onnx_only)


def test_lost_or_swapped_weights_are_refused(loop: tuple[ModelRegistry, Path, Any], tmp_path: Path) -> None:
    registry, _, _ = loop
    source = registry.get("ft-cxr", "0.0.1")
    other = ModelRegistry(tmp_path / "reg")
    model = other.register(source.card, source.onnx_path, source.weights_path)
    model.weights_path.write_bytes(b"not the registered weights")
    with pytest.raises(ChecksumMismatchError):
        other.load_weights(model)
    with pytest.raises(ChecksumMismatchError):
        other.verify(model)
    model.weights_path.unlink()
    with pytest.raises(MissingWeightsError):
        other.load_weights(model)
    onnx_only = other.register(source.card.model_copy(update={"version": "0.0.5"}), source.onnx_path)
    assert onnx_only.card.weights_sha256 is None and not onnx_only.has_weights
    with pytest.raises(ChecksumMismatchError):  # a card naming other weights than the file given
        other.register(
            source.card.model_copy(update={"version": "0.0.6", "weights_sha256": "0" * 64}),
            source.onnx_path,
            source.onnx_path,
        )


def test_init_from_needs_a_registry_and_a_new_version(
    loop: tuple[ModelRegistry, Path, Any], tmp_path: Path
) -> None:
    registry, manifest, _ = loop
    with pytest.raises(InitFromError, match="registry"):
        train(parse_recipe(_child_recipe(manifest)), tmp_path / "out", None)
    with pytest.raises(ModelExistsError):  # refused before any training
        train(parse_recipe(_child_recipe(manifest)), tmp_path / "out", registry)


def test_init_from_recipe_forms(tmp_path: Path) -> None:
    as_key = parse_recipe(_child_recipe(tmp_path))
    as_map = parse_recipe(_child_recipe(tmp_path, init_from={"name": "ft-cxr", "version": "0.0.1"}))
    assert as_key.init_from == as_map.init_from
    assert as_key.init_from is not None and as_key.init_from.key == PARENT
    with pytest.raises(RecipeError, match="NAME@VERSION"):
        parse_recipe(_child_recipe(tmp_path, init_from="ft-cxr"))
    with pytest.raises(RecipeError, match="must differ"):
        parse_recipe(_child_recipe(tmp_path, init_from="ft-cxr@0.0.2"))


def test_demo_models_ship_fine_tunable_weights(tmp_path: Path) -> None:
    """Each shipped demo version carries the state dict its ONNX was exported from."""
    import io

    registry = ModelRegistry(tmp_path / "reg")
    for model in install_demo_models(registry):
        assert model.has_weights
        registry.verify(model)
        recipe = load_recipe(DEMO_ROOT / model.card.name / model.card.version / "recipe.yaml")
        module = build_module(recipe)
        state = torch.load(io.BytesIO(registry.load_weights(model)), weights_only=True)
        module.load_state_dict(state, strict=True)


def test_registry_reads_onnx_without_torch(loop: tuple[ModelRegistry, Path, Any]) -> None:
    """Serving installs have no torch: registering, verifying and loading ONNX must not import it."""
    registry, _, _ = loop
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from models.registry import ModelRegistry\n"
        f"r = ModelRegistry({str(registry.root)!r}); m = r.get('ft-cxr', '0.0.2')\n"
        "r.verify(m); assert r.load_onnx(m); assert r.load_weights(m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_report_records_the_parent(loop: tuple[ModelRegistry, Path, TrainingResult]) -> None:
    _, _, child = loop
    payload = json.loads((child.report_dir / "metrics.json").read_text())
    assert payload["init_from"]["model"] == PARENT
    assert payload["weights_sha256"] == child.card.weights_sha256
    assert "manifest" in payload["data"]
    assert json.loads((child.report_dir / "card.json").read_text())["parent"] == PARENT
