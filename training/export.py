"""ONNX export with a parity check against torch on held-out inputs.

The export uses ``models.networks.export_onnx`` (legacy exporter, dynamic batch
axis). Parity is checked on real validation inputs, not zeros: a wrong op
conversion often only shows on realistic activations. The tolerance is the
architecture's (2D ~1e-4, 3D 1e-3: 3D nets accumulate more float error).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from inference.session import OnnxNetwork, create_session
from training.data import ClassificationSet, Examples
from training.errors import ExportParityError
from training.evaluation import CPU_SESSION

PARITY_SAMPLES = 4


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float
    tolerance: float
    samples: int


def export(module: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Write ``module`` as ONNX with a dynamic batch axis; ``input_shape`` is (C, *patch)."""
    from models.networks import export_onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, *input_shape), dtype=torch.float32)
    return export_onnx(module, example, path)


def parity_inputs(
    examples: Examples, patch_size: tuple[int, ...], samples: int = PARITY_SAMPLES
) -> NDArray[np.float32]:
    """Held-out inputs at the network's input size: images as they are, volumes cropped to the patch."""
    if isinstance(examples, ClassificationSet):
        return np.ascontiguousarray(examples.inputs[:samples])
    crops = []
    for volume in examples.volumes[:samples]:
        padded = np.pad(
            volume, [(0, 0), *((0, max(0, p - s)) for s, p in zip(volume.shape[1:], patch_size, strict=True))]
        )
        starts = [(s - p) // 2 for s, p in zip(padded.shape[1:], patch_size, strict=True)]
        crops.append(
            padded[(slice(None), *(slice(b, b + p) for b, p in zip(starts, patch_size, strict=True)))]
        )
    return np.ascontiguousarray(np.stack(crops), dtype=np.float32)


def check_parity(
    module: torch.nn.Module, onnx_path: Path, inputs: NDArray[np.float32], tolerance: float, model: str
) -> ParityReport:
    """Run both on the same batch (batch > 1 also proves the dynamic axis); raise past ``tolerance``."""
    module.eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(inputs)).numpy()
    actual = OnnxNetwork(create_session(onnx_path, CPU_SESSION))(inputs)
    diff = float(np.max(np.abs(expected - actual)))
    if not np.isfinite(diff) or diff > tolerance:
        raise ExportParityError(model, diff, tolerance)
    return ParityReport(max_abs_diff=diff, tolerance=tolerance, samples=int(inputs.shape[0]))
