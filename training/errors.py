"""Errors raised by training and evaluation.

Each error carries the fields a caller needs (which recipe, which source, which
architecture) so the CLI prints one clear line and tests can assert on fields
rather than on message text. Errors from ``datasets`` are wrapped at the edge
of ``training.data`` so callers catch one family.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class TrainingError(Exception):
    """Base class of every training/evaluation error."""


class RecipeError(TrainingError):
    """A recipe (or data spec) file is unreadable or does not satisfy the schema."""

    def __init__(self, source: str | Path, detail: str) -> None:
        self.source = str(source)
        self.detail = detail
        super().__init__(f"invalid recipe {self.source}: {detail}")


class UnknownArchitectureError(RecipeError):
    """The recipe names an architecture that ``models.networks`` does not define."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__("<recipe>", f"unknown architecture {name!r}; known: {', '.join(self.known)}")


class ArchitectureMismatchError(RecipeError):
    """The architecture cannot do the recipe's kind (e.g. a 2D classifier for 3D segmentation)."""

    def __init__(self, architecture: str, kind: str, reason: str) -> None:
        self.architecture = architecture
        self.kind = kind
        super().__init__("<recipe>", f"architecture {architecture!r} cannot train {kind}: {reason}")


class InitFromMismatchError(ArchitectureMismatchError):
    """``init_from`` names a version whose weights do not fit the recipe's network.

    Raised when the parent was trained as another architecture / task / channel count, or
    when its state dict's keys or shapes differ (typically other ``architecture.overrides``).
    """

    def __init__(self, parent: str, architecture: str, kind: str, reason: str) -> None:
        super().__init__(architecture, kind, reason)
        self.parent = parent
        self.args = (f"cannot fine-tune {architecture!r} ({kind}) from {parent}: {reason}",)


class InitFromError(TrainingError):
    """``init_from`` cannot be honoured for another reason (e.g. no registry to read it from)."""

    def __init__(self, parent: str, detail: str) -> None:
        self.parent = parent
        self.detail = detail
        super().__init__(f"cannot fine-tune from {parent}: {detail}")


class DataSourceError(TrainingError):
    """A data source cannot produce training examples (missing files, wrong shapes, bad labels)."""

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"data source {source}: {detail}")


class EmptyDatasetError(DataSourceError):
    """A split has no examples (or only one class where AUC needs both)."""

    def __init__(self, source: str, split: str, detail: str = "no examples") -> None:
        self.split = split
        super().__init__(source, f"{split} split: {detail}")


class MissingLabelledSeriesError(DataSourceError):
    """A labels CSV names series that are not in the DICOM folder."""

    def __init__(self, source: str, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        shown = ", ".join(self.missing[:5]) + (" ..." if len(self.missing) > 5 else "")
        super().__init__(source, f"labels CSV names {len(self.missing)} series not in the folder: {shown}")


class ExportParityError(TrainingError):
    """The exported ONNX model does not reproduce the torch outputs within tolerance."""

    def __init__(self, model: str, max_abs_diff: float, tolerance: float) -> None:
        self.model = model
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance
        super().__init__(
            f"ONNX export of {model} differs from torch by {max_abs_diff:.3g} (tolerance {tolerance:.1g})"
        )


class UnsupportedModelError(TrainingError):
    """``evaluate`` was given a model whose task/dimensions no training kind covers."""

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        super().__init__(f"cannot evaluate {model}: {detail}")
