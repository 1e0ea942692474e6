"""Registry on disk: register, checksum at load, promote/retire lifecycle."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from models.card import ModelCard, ModelState
from models.errors import (
    ChecksumMismatchError,
    ModelExistsError,
    ModelNotFoundError,
    ModelStateError,
    NoActiveVersionError,
)
from models.registry import CARD_FILE, ONNX_FILE, STATE_FILE, ModelRegistry, default_root

CardFactory = Callable[..., ModelCard]


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_register_writes_a_version_folder(
    registry: ModelRegistry, make_model_card: CardFactory, onnx_file: Path
) -> None:
    model = registry.register(make_model_card(), onnx_file)
    assert model.directory == registry.root / "chest-ct-nodule" / "1.0.0"
    assert {p.name for p in model.directory.iterdir()} == {CARD_FILE, ONNX_FILE, STATE_FILE}
    assert model.card.onnx_sha256 == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    assert model.state is ModelState.CANDIDATE
    assert registry.load_onnx(model) == onnx_file.read_bytes()
    assert not list((registry.root / "chest-ct-nodule").glob(".staging-*"))


def test_versions_are_immutable(
    registry: ModelRegistry, make_model_card: CardFactory, onnx_file: Path
) -> None:
    registry.register(make_model_card(), onnx_file)
    with pytest.raises(ModelExistsError):
        registry.register(make_model_card(), onnx_file)


def test_card_checksum_must_match_the_file(
    registry: ModelRegistry, make_model_card: CardFactory, onnx_file: Path
) -> None:
    with pytest.raises(ChecksumMismatchError) as info:
        registry.register(make_model_card(onnx_sha256="0" * 64), onnx_file)
    assert info.value.expected == "0" * 64
    assert info.value.actual == hashlib.sha256(onnx_file.read_bytes()).hexdigest()


def test_swapped_file_is_refused_at_load(
    registry: ModelRegistry, make_model_card: CardFactory, onnx_file: Path
) -> None:
    model = registry.register(make_model_card(), onnx_file)
    model.onnx_path.write_bytes(b"swapped")
    with pytest.raises(ChecksumMismatchError) as info:
        registry.load_onnx(model)
    assert info.value.model == "chest-ct-nodule@1.0.0"
    with pytest.raises(ChecksumMismatchError):
        registry.verify(model)
    with pytest.raises(ChecksumMismatchError):
        registry.promote("chest-ct-nodule", "1.0.0")


def test_promote_makes_one_active_version(
    registry: ModelRegistry, make_model_card: CardFactory, onnx_file: Path
) -> None:
    registry.register(make_model_card(version="1.0.0"), onnx_file)
    registry.register(make_model_card(version="1.1.0"), onnx_file)
    with pytest.raises(NoActiveVersionError):
        registry.active("chest-ct-nodule")
    registry.promote("chest-ct-nodule", "1.0.0")
    registry.promote("chest-ct-nodule", "1.1.0")
    assert registry.active("chest-ct-nodule").card.version == "1.1.0"
    assert registry.get("chest-ct-nodule", "1.0.0").state is ModelState.CANDIDATE
    assert [c.key for c in registry.active_cards()] == ["chest-ct-nodule@1.1.0"]
    assert registry.resolve("chest-ct-nodule").card.version == "1.1.0"


def test_retired_versions_cannot_come_back(
    registry: ModelRegistry, make_model_card: CardFactory, onnx_file: Path
) -> None:
    registry.register(make_model_card(), onnx_file)
    registry.promote("chest-ct-nodule", "1.0.0")
    retired = registry.retire("chest-ct-nodule", "1.0.0")
    assert retired.state is ModelState.RETIRED
    assert registry.active_cards() == []
    with pytest.raises(ModelStateError) as info:
        registry.promote("chest-ct-nodule", "1.0.0")
    assert info.value.state == "retired"
    with pytest.raises(ModelStateError):
        registry.retire("chest-ct-nodule", "1.0.0")


def test_list_filters_by_name_and_state(
    registry: ModelRegistry, make_model_card: CardFactory, onnx_file: Path
) -> None:
    registry.register(make_model_card(), onnx_file)
    registry.register(make_model_card(name="wsi-tumor", version="0.1"), onnx_file)
    registry.promote("wsi-tumor", "0.1")
    assert [m.key for m in registry.list_models()] == ["chest-ct-nodule@1.0.0", "wsi-tumor@0.1"]
    assert [m.key for m in registry.list_models(state=ModelState.ACTIVE)] == ["wsi-tumor@0.1"]
    assert [m.key for m in registry.list_models(name="chest-ct-nodule")] == ["chest-ct-nodule@1.0.0"]


def test_unknown_model(registry: ModelRegistry) -> None:
    assert registry.list_models() == []
    with pytest.raises(ModelNotFoundError) as info:
        registry.get("nope", "1")
    assert (info.value.name, info.value.version) == ("nope", "1")
    with pytest.raises(ModelNotFoundError):
        registry.active("nope")


def test_root_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOICHAN_MODELS_DIR", str(tmp_path))
    assert default_root() == tmp_path
    assert ModelRegistry().root == tmp_path
    monkeypatch.delenv("HOICHAN_MODELS_DIR")
    assert default_root() == Path("var/models")
