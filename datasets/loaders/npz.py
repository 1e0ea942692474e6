"""MedMNIST-style ``.npz`` files: ``{split}_images`` and ``{split}_labels`` for train/val/test.

Read from disk only (never downloaded). Loaded with ``allow_pickle=False`` so a file from
elsewhere cannot run code, and checked so a mismatched file fails here, not mid-training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.errors import EmptyDatasetError, NpzFormatError

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class NpzSplit:
    """One split: images ``(n, ...)`` and integer labels ``(n,)`` or multi-label ``(n, k)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_medmnist_npz(path: str | Path, *, splits: Sequence[str] = SPLITS) -> dict[str, NpzSplit]:
    """Read and validate the named splits; labels of shape ``(n, 1)`` are flattened to ``(n,)``."""
    path = Path(path)
    if not path.is_file():
        raise NpzFormatError(path, "file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise NpzFormatError(path, f"not a readable .npz ({exc})") from exc
    with archive:
        out = {split: _read_split(path, archive, split) for split in splits}
    if all(len(s) == 0 for s in out.values()):
        raise EmptyDatasetError(path)
    return out


def write_medmnist_npz(path: str | Path, splits: Mapping[str, NpzSplit]) -> Path:
    """Write splits in the same layout (used to hand synthetic sets to MedMNIST-style code)."""
    out = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for name, split in splits.items():
        arrays[f"{name}_images"] = split.images
        arrays[f"{name}_labels"] = split.labels
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    return out


def _read_split(path: Path, archive: Mapping[str, np.ndarray], split: str) -> NpzSplit:
    keys = (f"{split}_images", f"{split}_labels")
    missing = [k for k in keys if k not in archive]
    if missing:
        raise NpzFormatError(path, f"missing keys {missing}; has {sorted(archive.keys())}")
    images, labels = archive[keys[0]], archive[keys[1]]
    if images.ndim < 3:
        raise NpzFormatError(path, f"{keys[0]} must be (n, h, w[, c]) or (n, d, h, w); got {images.shape}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape[0] != images.shape[0]:
        raise NpzFormatError(path, f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
    if not np.issubdtype(labels.dtype, np.integer):
        raise NpzFormatError(path, f"{keys[1]} must be integers, got {labels.dtype}")
    return NpzSplit(images, labels.astype(np.int64))
