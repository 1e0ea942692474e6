"""ONNX Runtime sessions: provider choice, threading, a cache per model version, warm-up.

A session is expensive to build (graph optimisation, TensorRT engine build) and
cheap to run, so the factory builds one per model version and process and
hands out the same one afterwards. The bytes it builds from are the bytes the
registry verified against the card's sha256.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from inference.errors import ProviderUnavailableError
from models.card import ModelCard
from models.registry import ModelRegistry, RegisteredModel

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEFAULT_PROVIDERS: tuple[str, ...] = (TENSORRT, CUDA, CPU)
_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

ProviderSpec = str | tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class SessionConfig:
    """How sessions are built; one frozen value per deployment (CPU node, GPU node...)."""

    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    trt_cache_dir: Path | None = None
    trt_fp16: bool = False
    warmup_runs: int = 1
    extra_session_config: dict[str, str] = field(default_factory=dict)


def available_providers() -> tuple[str, ...]:
    return tuple(ort.get_available_providers())


def select_providers(config: SessionConfig, available: Sequence[str] | None = None) -> list[ProviderSpec]:
    """Requested providers in order, dropping those this build lacks (TensorRT, CUDA, CPU by default)."""
    have = tuple(available) if available is not None else available_providers()
    chosen = [p for p in config.providers if p in have]
    if not chosen:
        raise ProviderUnavailableError(config.providers, have)
    return [_with_options(p, config) for p in chosen]


def _with_options(provider: str, config: SessionConfig) -> ProviderSpec:
    if provider != TENSORRT:
        return provider
    options: dict[str, Any] = {"trt_fp16_enable": config.trt_fp16}
    if config.trt_cache_dir is not None:
        options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(config.trt_cache_dir)}
    return (provider, options)


def session_options(config: SessionConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for key, value in config.extra_session_config.items():
        options.add_session_config_entry(key, value)
    return options


def create_session(model: bytes | Path | str, config: SessionConfig | None = None) -> ort.InferenceSession:
    """Build a session from ONNX bytes (preferred: the verified bytes) or a path."""
    config = config or SessionConfig()
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(
        source, sess_options=session_options(config), providers=select_providers(config)
    )


class OnnxNetwork:
    """Adapter that makes an ORT session a plain ``numpy -> numpy`` callable for the pipelines.

    With ``io_binding`` the input is bound in place and the output allocated by
    ORT, which avoids one copy per call on CPU and the host round trip on GPU.
    """

    def __init__(self, session: ort.InferenceSession, io_binding: bool = False) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.io_binding = io_binding

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.io_binding:
            return self._run_bound(x)
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32)

    def _run_bound(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, x)
        binding.bind_output(self.output_name)
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)


def input_shape(card: ModelCard, batch: int = 1) -> tuple[int, ...]:
    """The (N, C, *patch) shape the card promises the network accepts."""
    return (batch, card.input.channels, *card.input.patch_size)


def warm_up(network: OnnxNetwork, card: ModelCard, runs: int) -> None:
    """Run zeros through the session so the first real study does not pay allocation/tuning costs."""
    zeros = np.zeros(input_shape(card), dtype=np.float32)
    for _ in range(runs):
        network(zeros)


class SessionFactory:
    """One ORT session per model version per process, built on first use, verified and warmed up."""

    def __init__(self, registry: ModelRegistry, config: SessionConfig | None = None) -> None:
        self.registry = registry
        self.config = config or SessionConfig()
        self._cache: dict[tuple[str, str, str], OnnxNetwork] = {}
        self._lock = threading.Lock()

    def network(self, model: RegisteredModel) -> OnnxNetwork:
        """The cached callable for a model version; builds it (checksum, session, warm-up) once."""
        key = (model.card.name, model.card.version, model.card.onnx_sha256 or "")
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._build(model)
            return self._cache[key]

    def session(self, model: RegisteredModel) -> ort.InferenceSession:
        return self.network(model).session

    def cached_versions(self) -> list[str]:
        return [f"{name}@{version}" for name, version, _ in self._cache]

    def evict(self, model: RegisteredModel) -> None:
        """Drop a version's session (after retire) so its memory is released."""
        with self._lock:
            for key in [k for k in self._cache if k[:2] == (model.card.name, model.card.version)]:
                del self._cache[key]

    def _build(self, model: RegisteredModel) -> OnnxNetwork:
        network = OnnxNetwork(create_session(self.registry.load_onnx(model), self.config))
        warm_up(network, model.card, self.config.warmup_runs)
        return network
