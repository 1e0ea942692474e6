"""Torch eager vs our ONNX Runtime pipeline on the shipped MONAI architectures (random weights).

Runs, with 2 threads for both runtimes:
  * 2D slice classifier (DenseNet121, 1x256x256), batch 1 and 8;
  * tile classifier (EfficientNet-B0, 3x224x224), batch 1 and 8;
  * 3D UNet in a sliding window (MONAI's inferer + torch vs our numpy inferer + ORT), window batch 1 and 8;
  * whole-slide triage on a generated 20k x 20k pyramid: our pipeline (tissue mask, reader threads,
    ORT) vs a plain loop of OpenSlide reads + the same model in torch.

Prints throughput and the ORT/torch ratio. Usage::

    python -m benchmarks.inference [--quick] [--skip-wsi] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.session import OnnxNetwork, SessionConfig, create_session
from inference.sliding_window import sliding_window_inference
from models.networks import build_network, export_onnx

Runner = Callable[[], object]


def throughput(run: Runner, items: int, seconds: float, warmup: int = 2) -> float:
    """Items per second over at least ``seconds`` (and at least 3 calls) after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        run()
        calls += 1
    return items * calls / (time.perf_counter() - start)


def torch_callable(net: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(batch)).numpy()

    return run


def ort_network(
    net: torch.nn.Module, shape: tuple[int, ...], folder: Path, name: str, threads: int
) -> OnnxNetwork:
    path = export_onnx(net, torch.zeros(1, *shape[1:]), folder / f"{name}.onnx")
    config = SessionConfig(intra_op_threads=threads, inter_op_threads=1, providers=("CPUExecutionProvider",))
    return OnnxNetwork(create_session(path, config), io_binding=True)


def report(name: str, unit: str, torch_rate: float, ort_rate: float) -> dict[str, Any]:
    ratio = ort_rate / torch_rate
    print(
        f"{name:<42} torch {torch_rate:9.2f} {unit}  ort {ort_rate:9.2f} {unit}  ratio {ratio:5.2f}x",
        flush=True,
    )
    return {"case": name, "torch": torch_rate, "ort": ort_rate, "ratio": ratio}


def bench_classifier(
    arch: str, shape: tuple[int, int, int], folder: Path, threads: int, seconds: float, **overrides: Any
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    net = build_network(arch, **overrides).eval()
    ort_net = ort_network(net, (1, *shape), folder, arch, threads)
    eager = torch_callable(net)
    rows = []
    for batch in (1, 8):
        x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
        t = throughput(lambda x=x: eager(x), batch, seconds)
        o = throughput(lambda x=x: ort_net(x), batch, seconds)
        rows.append(report(f"{arch} {shape} batch {batch}", "img/s", t, o))
    return rows


def bench_unet_sliding_window(
    folder: Path, threads: int, seconds: float, quick: bool
) -> list[dict[str, Any]]:
    from monai.inferers import sliding_window_inference as monai_sliding_window

    torch.manual_seed(0)
    roi = (32, 96, 96) if quick else (64, 96, 96)
    volume = (1, 1, 48, 192, 192) if quick else (1, 1, 96, 192, 192)
    net = build_network("unet-3d").eval()
    ort_net = ort_network(net, (1, 1, *roi), folder, "unet-3d", threads)
    image = np.random.default_rng(0).random(volume, dtype=np.float32)
    rows = []
    for batch in (1, 8):

        def eager(batch: int = batch) -> object:
            with torch.inference_mode():
                return monai_sliding_window(
                    torch.from_numpy(image), roi, batch, net, overlap=0.25, mode="gaussian", sigma_scale=0.125
                )

        def ours(batch: int = batch) -> object:
            return sliding_window_inference(image[0], roi, ort_net, overlap=0.25, batch_size=batch)

        t = throughput(eager, 1, seconds, warmup=1)
        o = throughput(ours, 1, seconds, warmup=1)
        rows.append(report(f"unet-3d sliding window {volume[2:]} roi {roi} wb {batch}", "vol/s", t, o))
    return rows


# -- whole slide ----------------------------------------------------------------------------------------
def _tissue(x0: int, y0: int, size: int, step: int, level0: int) -> np.ndarray:
    """Procedural H&E-like slide: two tissue ellipses with texture; the same function at every level."""
    ys, xs = np.mgrid[0:size, 0:size]
    gx, gy = (x0 + xs) * step / level0, (y0 + ys) * step / level0
    inside = ((gx - 0.35) / 0.25) ** 2 + ((gy - 0.4) / 0.3) ** 2 < 1
    inside |= ((gx - 0.72) / 0.18) ** 2 + ((gy - 0.7) / 0.22) ** 2 < 1
    texture = ((np.sin(gx * 3000) + np.cos(gy * 2700)) * 20).astype(np.int16)
    tile = np.full((size, size, 3), 240, dtype=np.int16)
    tile[inside] = np.array([190, 110, 165]) + texture[inside, None]
    return np.clip(tile, 0, 255).astype(np.uint8)


def write_synthetic_slide(path: Path, size: int = 20480, mpp: float = 0.25, levels: int = 4) -> Path:
    """A pyramidal TIFF OpenSlide reads as Aperio, written tile by tile so memory stays small."""
    import tifffile

    description = (
        f"Aperio Image Library v12.0.0\r\n{size}x{size} (256x256) JPEG/RGB Q=80|AppMag = 40|MPP = {mpp}"
    )
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(levels):
            step, side = 2**level, size // 2**level

            def tiles(step: int = step, side: int = side) -> Iterator[np.ndarray]:
                for ty in range(0, side, 256):
                    for tx in range(0, side, 256):
                        yield _tissue(tx, ty, 256, step, size)

            tif.write(
                tiles(),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(256, 256),
                compression="jpeg",
                photometric="rgb",
                subfiletype=0 if level == 0 else 1,
                description=description if level == 0 else None,
                metadata=None,
            )
    return path


def bench_wsi(folder: Path, threads: int, quick: bool) -> list[dict[str, Any]]:
    import openslide

    from inference.wsi import TileReader, plan_tiles, slide_tissue_mask
    from inference.wsi_pipeline import run_slide_triage
    from models.card import ModelCard

    size = 8192 if quick else 20480
    start = time.perf_counter()
    path = write_synthetic_slide(folder / "synthetic.svs", size)
    print(f"(wrote {size}x{size} synthetic slide in {time.perf_counter() - start:.1f}s)", flush=True)
    card = ModelCard.model_validate(
        {
            "name": "bench-tiles",
            "version": "0",
            "task": "slide-classification",
            "input": {
                "spatial_dims": 2, "channels": 3, "patch_size": [224, 224], "mpp": 1.0,
                "normalization": "mean_std", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            },
            "labels": ["tumor"],
        }
    )  # fmt: skip
    torch.manual_seed(0)
    net = build_network("efficientnet-b0-tiles", num_classes=1).eval()
    ort_net = ort_network(net, (1, 3, 224, 224), folder, "tiles-wsi", threads)
    eager = torch_callable(net)
    warm = np.zeros((8, 3, 224, 224), dtype=np.float32)
    for _ in range(2):  # both runtimes warmed up on the batch shape before timing
        ort_net(warm)
        eager(warm)

    start = time.perf_counter()
    result = run_slide_triage(path, card, ort_net, batch_size=8, readers=2)
    ours_seconds = time.perf_counter() - start
    ours = result.tiles_scored / ours_seconds

    slide = openslide.OpenSlide(str(path))
    grid = plan_tiles(
        slide.dimensions, slide.level_downsamples, 0.25, 1.0, 224, slide_tissue_mask(slide), 0.25
    )
    eager = torch_callable(net)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
    start = time.perf_counter()
    batch: list[np.ndarray] = []
    for tile in grid.tiles:  # the plain loop: read level 0, resize, normalize, 8 at a time into torch
        level0 = round(grid.tile_size_level0)
        region = slide.read_region((tile.x, tile.y), 0, (level0, level0)).convert("RGB").resize((224, 224))
        batch.append((np.asarray(region, dtype=np.float32).transpose(2, 0, 1) / 255.0 - mean) / std)
        if len(batch) == 8:
            eager(np.stack(batch))
            batch = []
    if batch:
        eager(np.stack(batch))
    plain = len(grid.tiles) / (time.perf_counter() - start)

    start = time.perf_counter()
    reader = TileReader(slide, grid)
    batch = []
    for tile in grid.tiles:  # the plain loop reading from the right pyramid level (a fairer baseline)
        pixels = reader.read(tile)
        batch.append((pixels.astype(np.float32).transpose(2, 0, 1) / 255.0 - mean) / std)
        if len(batch) == 8:
            eager(np.stack(batch))
            batch = []
    if batch:
        eager(np.stack(batch))
    plain_level = len(grid.tiles) / (time.perf_counter() - start)
    print(
        f"(slide {size}x{size}: {result.tiles_scored} tissue tiles of {result.tiles_total}, "
        f"tissue mask {result.timings['tissue']:.2f}s, total {ours_seconds:.1f}s)"
    )
    return [
        report("WSI triage vs plain loop (level-0 reads)", "tile/s", plain, ours),
        report("WSI triage vs plain loop (pyramid-level reads)", "tile/s", plain_level, ours),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="smaller 3D volume and slide")
    parser.add_argument("--skip-wsi", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    print(f"torch {torch.__version__}, threads {args.threads}, python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="hoichan-bench-") as tmp:
        folder = Path(tmp)
        bench_classifier("densenet121-2d", (1, 256, 256), folder, args.threads, args.seconds)
        bench_classifier("efficientnet-b0-tiles", (3, 224, 224), folder, args.threads, args.seconds)
        bench_unet_sliding_window(folder, args.threads, args.seconds, args.quick)
        if not args.skip_wsi:
            bench_wsi(folder, args.threads, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
