"""Session factory: provider choice, cache per model version, checksum refusal, ONNX adapter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.errors import ProviderUnavailableError
from inference.session import (
    CPU,
    CUDA,
    TENSORRT,
    OnnxNetwork,
    SessionConfig,
    SessionFactory,
    select_providers,
)
from models.card import ModelCard
from models.errors import ChecksumMismatchError
from models.registry import ModelRegistry


def test_providers_follow_config_order_and_availability() -> None:
    config = SessionConfig()
    assert select_providers(config, [CPU]) == [CPU]
    assert select_providers(config, [CPU, CUDA]) == [CUDA, CPU]
    chosen = select_providers(SessionConfig(trt_cache_dir=Path("/tmp/trt")), [CPU, CUDA, TENSORRT])
    assert chosen[0][0] == TENSORRT
    assert chosen[0][1]["trt_engine_cache_path"] == "/tmp/trt"
    assert chosen[1:] == [CUDA, CPU]


def test_missing_required_provider_is_a_clear_error() -> None:
    with pytest.raises(ProviderUnavailableError) as info:
        select_providers(SessionConfig(providers=(CUDA,)), [CPU])
    assert info.value.available == (CPU,)


@pytest.fixture
def registered(
    tmp_path: Path, tiny_onnx: dict[str, Any], make_card: Callable[..., ModelCard]
) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    registry.register(make_card(), tiny_onnx["classifier"][1])
    registry.promote("ct-test", "1.0.0")
    return registry


def test_factory_caches_one_session_per_version(registered: ModelRegistry) -> None:
    factory = SessionFactory(registered, SessionConfig(intra_op_threads=1))
    model = registered.active("ct-test")
    first, second = factory.network(model), factory.network(model)
    assert first is second
    assert factory.cached_versions() == ["ct-test@1.0.0"]
    assert first(np.zeros((3, 1, 32, 32), dtype=np.float32)).shape == (3, 1)
    factory.evict(model)
    assert factory.cached_versions() == []


def test_tampered_model_is_refused(registered: ModelRegistry) -> None:
    model = registered.active("ct-test")
    with model.onnx_path.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ChecksumMismatchError) as info:
        SessionFactory(registered).network(model)
    assert info.value.model == "ct-test@1.0.0"
    assert info.value.expected == model.card.onnx_sha256


def test_io_binding_matches_plain_run(tiny_onnx: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    from inference.session import create_session

    module, path = tiny_onnx["classifier"]
    session = create_session(path, SessionConfig(intra_op_threads=1))
    x = np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32)
    plain, bound = OnnxNetwork(session)(x), OnnxNetwork(session, io_binding=True)(x)
    np.testing.assert_allclose(plain, bound)
    with torch.no_grad():
        np.testing.assert_allclose(plain, module(torch.from_numpy(x)).numpy(), atol=1e-5)
