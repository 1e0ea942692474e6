"""Parity torch eager vs ONNX Runtime for every shipped architecture (small configs, random weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from models.networks import ARCHITECTURES, build_network, export_onnx  # noqa: E402

SMALL = {
    "densenet121-2d": ({}, (2, 1, 64, 64)),
    "efficientnet-b0-tiles": ({}, (2, 3, 64, 64)),
    "unet-3d": ({"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1}, (1, 1, 16, 32, 32)),
}


def test_every_architecture_has_a_parity_case() -> None:
    assert set(SMALL) == set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_onnx_matches_torch(name: str, tmp_path: Path) -> None:
    overrides, shape = SMALL[name]
    torch.manual_seed(0)
    net = build_network(name, **overrides).eval()
    x = torch.rand(*shape)
    path = export_onnx(net, x[:1], tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(got, expected, atol=ARCHITECTURES[name].parity_atol, rtol=1e-3)


def test_unknown_architecture() -> None:
    with pytest.raises(KeyError, match="known"):
        build_network("resnet-9000")


def test_import_models_does_not_need_torch() -> None:
    import subprocess
    import sys

    code = "import sys, models, inference; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
