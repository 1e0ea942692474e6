"""MONAI network definitions shipped with Hoichan, as a table of named architectures.

Training builds networks from here and exports them to ONNX; the serving path
never imports this module (it needs torch). ``import models`` does not import
it either: only ``import models.networks`` pulls torch in.

Each architecture records the tolerance its ONNX export must meet against
torch eager; 3D nets accumulate more float error than 2D ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import DenseNet121, EfficientNetBN, UNet

from models.card import Task


@dataclass(frozen=True)
class Architecture:
    """A named network family with defaults that overrides can shrink (tests) or widen."""

    name: str
    task: Task
    spatial_dims: int
    factory: Callable[..., torch.nn.Module]
    defaults: dict[str, Any]
    parity_atol: float
    description: str

    def build(self, **overrides: Any) -> torch.nn.Module:
        return self.factory(**{**self.defaults, **overrides})


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            name="densenet121-2d",
            task=Task.CLASSIFICATION,
            spatial_dims=2,
            factory=DenseNet121,
            defaults={"spatial_dims": 2, "in_channels": 1, "out_channels": 2},
            parity_atol=1e-4,
            description="per-slice / radiograph classifier (CT, CR/DX)",
        ),
        Architecture(
            name="efficientnet-b0-tiles",
            task=Task.SLIDE_CLASSIFICATION,
            spatial_dims=2,
            factory=EfficientNetBN,
            defaults={
                "model_name": "efficientnet-b0",
                "pretrained": False,
                "spatial_dims": 2,
                "in_channels": 3,
                "num_classes": 2,
            },
            parity_atol=1e-4,
            description="H&E tile classifier for whole-slide triage",
        ),
        Architecture(
            name="unet-3d",
            task=Task.SEGMENTATION,
            spatial_dims=3,
            factory=UNet,
            defaults={
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": 2,
                "channels": (16, 32, 64, 128),
                "strides": (2, 2, 2),
                "num_res_units": 2,
            },
            parity_atol=1e-3,
            description="3D lesion segmentation run in a sliding window",
        ),
    )
}


def build_network(name: str, **overrides: Any) -> torch.nn.Module:
    """Instantiate a shipped architecture by name (KeyError names the known ones)."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name].build(**overrides)


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = 17) -> Path:
    """Export with a dynamic batch axis using the legacy exporter (about 10x faster than dynamo).

    The batch axis is dynamic so the serving pipeline can batch slices, windows
    or tiles; spatial axes stay fixed because the card fixes the patch size.
    """
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and legacy-exporter notices; parity is tested instead
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path
