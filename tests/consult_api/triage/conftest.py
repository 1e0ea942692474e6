"""Triage fixtures: hand-made ONNX models in a registry, a real Celery worker and beat as processes,
a local SMTP sink (aiosmtpd) and a webhook receiver."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from consult_api.config import Settings
from consult_api.worker import create_celery
from models.card import ModelCard
from models.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[3]


def classifier_onnx(path: Path, *, channels: int = 1, slow_matmuls: int = 0) -> Path:
    """(N,1,32,32) -> (N,channels) logits = 10 * (max pixel - 0.5): a dense blob scores ~0.99.

    ``slow_matmuls`` chains input-dependent 1024x1024 matmuls (seconds of CPU) so a test can kill
    the worker mid-task; ``channels`` != labels makes the pipeline raise (a broken model).
    """
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "axis1"], ["m1"]),
        helper.make_node("Sub", ["m1", "half"], ["d"]),
        helper.make_node("Mul", ["d", "ten"], ["z"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        numpy_helper.from_array(np.array(10.0, dtype=np.float32), "ten"),
        numpy_helper.from_array(np.ones((1, channels), dtype=np.float32), "widen"),
    ]
    last = "z"
    if slow_matmuls:
        nodes.append(helper.make_node("Reshape", ["x", "flat"], ["f"]))
        nodes.append(helper.make_node("Tile", ["f", "reps"], ["t"]))
        inits += [
            numpy_helper.from_array(np.array([-1, 1024], dtype=np.int64), "flat"),
            numpy_helper.from_array(np.array([256, 1], dtype=np.int64), "reps"),
            numpy_helper.from_array(np.full((1024, 1024), 1e-3, dtype=np.float32), "w"),
        ]
        current = "t"
        for i in range(slow_matmuls):
            nodes.append(helper.make_node("MatMul", [current, "w"], [f"mm{i}"]))
            current = f"mm{i}"
        nodes.append(helper.make_node("ReduceMean", [current], ["slow"], keepdims=0))
        nodes.append(helper.make_node("Mul", ["slow", "zero"], ["nil"]))
        nodes.append(helper.make_node("Add", ["z", "nil"], ["z2"]))
        inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
        last = "z2"
    nodes.append(helper.make_node("MatMul", [last, "widen"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def ct_card(name: str = "ct-dense", version: str = "1.0.0", **overrides: Any) -> ModelCard:
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "task": "classification",
        "serves": {"modalities": ["CT"]},
        "input": {"spatial_dims": 2, "patch_size": [32, 32], "window": {"center": 40, "width": 400}},
        "labels": ["dense"],
        "thresholds": {"dense": {"report": 0.5, "urgent": 0.8, "critical": 0.95}},
    }
    data.update(overrides)
    return ModelCard.model_validate(data)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def install(registry: ModelRegistry, card: ModelCard, onnx_path: Path) -> ModelCard:
    registry.register(card, onnx_path)
    return registry.promote(card.name, card.version).card


@dataclass
class WorkerProcs:
    """A worker and a beat process over the test's database, data folder and registry."""

    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str = "worker", beat: bool = True, timeout: float = 30.0) -> None:
        log = self.log_dir / f"{name}.log"
        log.write_text("")
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "consult_api.worker",
            "worker",
            "--concurrency",
            "1",
            "--prefetch-multiplier",
            "1",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
            "-n",
            f"{name}@%h",
        ]
        self.procs[name] = subprocess.Popen(
            cmd, env=self.env, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )
        if beat and "beat" not in self.procs:
            beat_log = self.log_dir / "beat.log"
            self.procs["beat"] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "consult_api.worker",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "-s",
                    str(self.log_dir / "beat-schedule"),
                ],
                env=self.env,
                cwd=ROOT,
                stdout=beat_log.open("ab"),
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while "ready." not in log.read_text():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def pool_children(self, name: str = "worker") -> list[int]:
        parent = self.procs[name].pid
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                children.append(int(stat.parent.name))
        return children

    def log(self, name: str = "worker") -> str:
        return (self.log_dir / f"{name}.log").read_text()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGQUIT)  # cold shutdown: the test is over, skip the warm wait
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def worker_env(settings: Settings, registry: ModelRegistry, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOICHAN_")}
    env.update(
        {
            "HOICHAN_DATA_DIR": str(settings.data_dir.resolve()),
            "HOICHAN_DATABASE_URL": settings.resolved_database_url,
            "HOICHAN_SECRET_KEY": "test-secret-" + "x" * 40,
            "HOICHAN_MODELS_DIR": str(registry.root),
            "HOICHAN_STUDY_STABLE_SECONDS": "0.5",
            "HOICHAN_TRIAGE_POLL_SECONDS": "0.5",
            "HOICHAN_ALERT_CHECK_SECONDS": "1",
            "HOICHAN_RESULT_BACKEND": f"file://{(settings.data_dir / 'results').resolve()}",
            "HOICHAN_LOG_LEVEL": "INFO",
            **extra,
        }
    )
    (settings.data_dir / "results").mkdir(parents=True, exist_ok=True)
    return env


@pytest.fixture
def workers(
    settings: Settings, registry: ModelRegistry, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcs]]:
    started: list[WorkerProcs] = []

    def make(**extra: str) -> WorkerProcs:
        procs = WorkerProcs(worker_env(settings, registry, **extra), tmp_path)
        started.append(procs)
        return procs

    yield make
    for procs in started:
        procs.stop()


def producer(env: dict[str, str]) -> Any:
    """A Celery client configured exactly like the worker (same environment)."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return create_celery(Settings())
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


# -- alert sinks -------------------------------------------------------------------------------------


@dataclass
class Webhook:
    url: str
    received: list[dict[str, Any]]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Webhook(f"http://127.0.0.1:{server.server_address[1]}/hook", received)
    server.shutdown()


@dataclass
class Mailbox:
    port: int
    messages: list[Any]


@pytest.fixture
def smtp_sink() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    messages: list[Any] = []

    class Collect(Message):
        def handle_message(self, message: Any) -> None:
            messages.append(message)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    yield Mailbox(port, messages)
    controller.stop()


def tile_onnx(path: Path, patch: int = 64) -> Path:
    """(N,3,patch,patch) -> (N,1) logits = 20 * (0.85 - mean intensity): tissue scores high, glass low."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "axis1"], ["m1"]),
        helper.make_node("Sub", ["level", "m1"], ["d"]),
        helper.make_node("Mul", ["d", "gain"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array(0.85, dtype=np.float32), "level"),
        numpy_helper.from_array(np.array(20.0, dtype=np.float32), "gain"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiles",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, patch, patch])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def slide_card(name: str = "he-tumour", version: str = "1.0.0") -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": name,
            "version": version,
            "task": "slide-classification",
            "input": {"spatial_dims": 2, "channels": 3, "patch_size": [64, 64], "mpp": 1.0},
            "labels": ["tumour"],
            "thresholds": {"tumour": {"report": 0.5, "urgent": 0.6}},
        }
    )
