"""What differs between the model kinds at training time: batches, augmentation and loss.

Classification (2D images, H&E tiles) and 3D segmentation share the loop in
``training.loop``; each kind supplies a ``TaskAdapter``. Scoring is not here:
it is ``training.evaluation``, shared with the ONNX path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from training.data import ClassificationSet, Examples, SegmentationSet
from training.recipe import Kind

Batch = tuple[torch.Tensor, torch.Tensor]


class TaskAdapter(Protocol):
    """Per-kind training behaviour."""

    def loss(self) -> torch.nn.Module: ...

    def batches(
        self, train: Examples, rng: np.random.Generator, batch_size: int, steps: int
    ) -> Iterator[Batch]:
        """``steps`` augmented training batches for one epoch."""
        ...

    def default_steps(self, train: Examples, batch_size: int) -> int: ...


@dataclass(frozen=True)
class ClassificationTask:
    """Whole-image classification; ``rotate`` adds 90-degree turns (tiles have no up)."""

    rotate: bool

    def loss(self) -> torch.nn.Module:
        return torch.nn.CrossEntropyLoss()

    def default_steps(self, train: Examples, batch_size: int) -> int:
        return max(1, math.ceil(len(train) / batch_size))

    def batches(
        self, train: Examples, rng: np.random.Generator, batch_size: int, steps: int
    ) -> Iterator[Batch]:
        assert isinstance(train, ClassificationSet)
        order = _epoch_order(rng, len(train), batch_size * steps)
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            images = np.stack([self._augment(train.inputs[i], rng) for i in index])
            yield torch.from_numpy(images), torch.from_numpy(train.targets[index])

    def _augment(self, image: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
        out = image[:, :, ::-1] if rng.random() < 0.5 else image
        if self.rotate:
            out = np.rot90(out, int(rng.integers(0, 4)), axes=(1, 2))
            out = out[:, ::-1] if rng.random() < 0.5 else out
        return np.ascontiguousarray(out)


@dataclass(frozen=True)
class SegmentationTask:
    """3D segmentation on random patches of the card's size, centred on foreground part of the time.

    Lesions are a fraction of a percent of the voxels: uniform crops would be
    almost all background, so ``foreground_fraction`` of the crops are centred
    on a random lesion voxel.
    """

    patch_size: tuple[int, ...]
    foreground_fraction: float

    def loss(self) -> torch.nn.Module:
        from monai.losses import DiceCELoss

        # batch=True pools the Dice over the batch: crops without a lesion do not produce 0/0.
        return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    def default_steps(self, train: Examples, batch_size: int) -> int:
        return max(1, math.ceil(len(train) / batch_size))

    def batches(
        self, train: Examples, rng: np.random.Generator, batch_size: int, steps: int
    ) -> Iterator[Batch]:
        assert isinstance(train, SegmentationSet)
        for _ in range(steps):
            crops = [self._crop(train, int(rng.integers(len(train))), rng) for _ in range(batch_size)]
            images = np.stack([c[0] for c in crops])
            masks = np.stack([c[1] for c in crops])[:, None].astype(np.int64)
            yield torch.from_numpy(images), torch.from_numpy(masks)

    def _crop(
        self, train: SegmentationSet, index: int, rng: np.random.Generator
    ) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
        volume, mask = _pad_to(train.volumes[index], train.masks[index], self.patch_size)
        centre = _crop_centre(mask, rng, self.foreground_fraction)
        starts = [
            int(np.clip(c - p // 2, 0, s - p))
            for c, p, s in zip(centre, self.patch_size, mask.shape, strict=True)
        ]
        window = tuple(slice(b, b + p) for b, p in zip(starts, self.patch_size, strict=True))
        image, label = volume[(slice(None), *window)], mask[window]
        for axis in (1, 2):  # in-plane flips; z keeps its head-feet meaning
            if rng.random() < 0.5:
                image, label = np.flip(image, axis + 1), np.flip(label, axis)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


def _crop_centre(mask: NDArray[np.uint8], rng: np.random.Generator, foreground_fraction: float) -> list[int]:
    if rng.random() < foreground_fraction and mask.any():
        points = np.argwhere(mask)
        return [int(v) for v in points[int(rng.integers(len(points)))]]
    return [int(rng.integers(0, s)) for s in mask.shape]


def _pad_to(
    volume: NDArray[np.float32], mask: NDArray[np.uint8], size: tuple[int, ...]
) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Pad at the end up to the patch size, as the serving sliding window does."""
    pad = [(0, max(0, p - s)) for s, p in zip(mask.shape, size, strict=True)]
    if not any(after for _, after in pad):
        return volume, mask
    return np.pad(volume, [(0, 0), *pad]), np.pad(mask, pad)


def _epoch_order(rng: np.random.Generator, n: int, needed: int) -> NDArray[np.int64]:
    """Shuffled indices, repeated as needed when an epoch has more samples than the set."""
    reps = max(1, math.ceil(needed / n))
    return np.concatenate([rng.permutation(n) for _ in range(reps)]).astype(np.int64)


def adapter_for(kind: Kind, patch_size: tuple[int, ...], foreground_fraction: float) -> TaskAdapter:
    if kind == "segmentation-3d":
        return SegmentationTask(tuple(patch_size), foreground_fraction)
    return ClassificationTask(rotate=kind == "tile-classification")
