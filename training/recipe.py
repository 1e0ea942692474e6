"""Training recipes: one YAML file (or pydantic object) says everything a training run needs.

A recipe names the architecture (from ``models.networks``), the data source,
the input spec the card will carry (so preprocessing at training time is the
card's, by construction), the optimiser and schedule, and the card fields of
the model it produces. Nothing else configures a run, so a shipped model is
reproduced by its recipe alone.

``init_from: NAME@VERSION`` (or ``{name, version}``) fine-tunes a registered version
instead of starting from random weights: the feedback loop's "export -> fine-tune ->
new candidate version" step (see ``training.finetune``).

Relative paths inside a recipe resolve against the recipe's folder, so a
recipe can travel with its data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.card import (
    NAME_PATTERN,
    VERSION_PATTERN,
    Activation,
    Applicability,
    DecisionThresholds,
    InputSpec,
    LabelCode,
    OutputSpec,
    Task,
)
from training.errors import ArchitectureMismatchError, RecipeError, UnknownArchitectureError

Kind = Literal["classification-2d", "segmentation-3d", "tile-classification"]
KIND_TASK: dict[str, Task] = {
    "classification-2d": Task.CLASSIFICATION,
    "segmentation-3d": Task.SEGMENTATION,
    "tile-classification": Task.SLIDE_CLASSIFICATION,
}
KIND_DIMS: dict[str, int] = {"classification-2d": 2, "segmentation-3d": 3, "tile-classification": 2}
_CLASSIFIER_TASKS = frozenset({Task.CLASSIFICATION, Task.SLIDE_CLASSIFICATION})
PositiveLabels = list[str]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the recipe file (``context['base']``), not the working directory."""
    base = (info.context or {}).get("base")
    return value if value.is_absolute() or base is None else Path(base) / value


# -- data sources --------------------------------------------------------------------------------
class _Synthetic(_Strict):
    n_train: int = Field(ge=1)
    n_val: int = Field(ge=1)
    seed: int = 0


class SyntheticRadiographs(_Synthetic):
    """Chest-radiograph-like images (``datasets.synthetic.radiograph``), half with opacities."""

    source: Literal["synthetic-radiographs"]
    size: int = Field(default=128, ge=16)
    n_opacities: tuple[int, int] = (1, 3)
    amplitude: tuple[float, float] = (0.08, 0.3)
    noise: float = Field(default=0.012, ge=0.0)


class SyntheticCT(_Synthetic):
    """CT volumes in HU with lesion masks (``datasets.synthetic.ct``)."""

    source: Literal["synthetic-ct"]
    shape: tuple[int, int, int] = (32, 64, 64)
    spacing_mm: tuple[float, float, float] | None = None
    n_lesions: tuple[int, int] = (0, 3)
    lesion_radius_mm: tuple[float, float] = (3.0, 15.0)
    lung_lesion_hu: tuple[float, float] = (-350.0, 60.0)
    liver_contrast_hu: tuple[float, float] = (15.0, 70.0)
    noise_hu: float = Field(default=12.0, ge=0.0)


class SyntheticTiles(_Synthetic):
    """H&E-like tiles, tumour vs normal (``datasets.synthetic.he_tiles``) at the card's mpp and size."""

    source: Literal["synthetic-he-tiles"]
    tumour_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)


class _Split(_Strict):
    val_fraction: float = Field(default=0.2, gt=0.0, le=1.0)
    seed: int = 0


class DicomFolderSource(_Split):
    """A folder of DICOM series plus a labels CSV (``datasets.loaders.dicom_folder``).

    Classification: each series must be one image (DX/CR) and its label is positive when it is
    one of ``positive_labels``. Segmentation: ``mask_column`` names a ``.npy`` mask (z, y, x)
    per series, relative to the CSV.
    """

    source: Literal["dicom-folder"]
    root: Path
    labels_csv: Path
    label_column: str = "label"
    positive_labels: PositiveLabels = Field(default_factory=lambda: ["1", "true", "yes", "positive"])
    mask_column: str | None = None

    _root = field_validator("root", "labels_csv")(_resolve_path)


class SlidesSource(_Split):
    """Slides with same-stem GeoJSON annotations in a folder -> labelled tiles at the card's mpp.

    The split is by slide, never by tile: neighbouring tiles of one slide are not independent.
    """

    source: Literal["slides"]
    root: Path
    patterns: list[str] = Field(default_factory=lambda: ["*.tiff", "*.tif", "*.svs", "*.ndpi"])
    positive_label: str = "tumour"
    background_label: str = "normal"
    min_coverage: float = Field(default=0.5, gt=0.0, le=1.0)

    _root = field_validator("root")(_resolve_path)


class NpzSource(_Strict):
    """A MedMNIST-style ``.npz`` (train/val splits); 2D grey or RGB images, binary labels."""

    source: Literal["npz"]
    path: Path
    positive_classes: list[int] = Field(default_factory=lambda: [1])

    _path = field_validator("path")(_resolve_path)


class ManifestSource(_Split):
    """A training manifest folder (the de-identified export of specialist-confirmed findings)."""

    source: Literal["manifest"]
    folder: Path
    positive_labels: PositiveLabels = Field(default_factory=list)
    background_label: str = "normal"

    _folder = field_validator("folder")(_resolve_path)


DataSpec = Annotated[
    SyntheticRadiographs
    | SyntheticCT
    | SyntheticTiles
    | DicomFolderSource
    | SlidesSource
    | NpzSource
    | ManifestSource,
    Field(discriminator="source"),
]


class DataSection(_Strict):
    """What ``hoichan evaluate`` reads: a data source alone (the ``data:`` section of a recipe)."""

    data: DataSpec


# -- training ------------------------------------------------------------------------------------
class ArchitectureSpec(_Strict):
    """A ``models.networks`` architecture name plus constructor overrides (e.g. a smaller width)."""

    name: str
    overrides: dict[str, Any] = Field(default_factory=dict)


class OptimizerSpec(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    schedule: Literal["constant", "cosine"] = "cosine"


class EarlyStopping(_Strict):
    """Stop when the validation metric has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int = Field(default=5, ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)


class CardSpec(_Strict):
    """The card fields a recipe decides; task, input, architecture and metrics are filled in by training."""

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    labels: list[str] = Field(min_length=1, max_length=1)
    serves: Applicability = Field(default_factory=Applicability)
    output: OutputSpec = Field(default_factory=lambda: OutputSpec(activation=Activation.SOFTMAX))
    thresholds: dict[str, DecisionThresholds] = Field(default_factory=dict)
    label_codes: dict[str, LabelCode] = Field(default_factory=dict)
    intended_use: str = ""
    manufacturer: str = "Hoichan"
    not_for_clinical_use: bool = True


class InitFrom(_Strict):
    """A registered model version whose torch weights a run starts from (fine-tuning)."""

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _from_key(cls, value: Any) -> Any:
        """Accept ``"NAME@VERSION"`` as well as the mapping."""
        if isinstance(value, str):
            name, sep, version = value.partition("@")
            if not sep:
                raise ValueError(f"init_from must be NAME@VERSION or {{name, version}}, got {value!r}")
            return {"name": name, "version": version}
        return value

    @property
    def key(self) -> str:
        """``name@version``, as recorded in the new card's ``parent``."""
        return f"{self.name}@{self.version}"


class Recipe(_Strict):
    """One training run, start to registered model."""

    kind: Kind
    architecture: ArchitectureSpec
    data: DataSpec
    input: InputSpec
    card: CardSpec
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=16, ge=1)
    steps_per_epoch: int | None = Field(default=None, ge=1)
    foreground_crop_fraction: float = Field(default=0.67, ge=0.0, le=1.0)
    seed: int = 0
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    time_limit_s: float | None = Field(default=None, gt=0.0)
    threads: int | None = Field(default=None, ge=1)
    init_from: InitFrom | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        dims = KIND_DIMS[self.kind]
        if self.input.spatial_dims != dims:
            raise ValueError(f"kind {self.kind} needs input.spatial_dims {dims}")
        if self.kind == "tile-classification" and (self.input.mpp is None or self.input.channels != 3):
            raise ValueError("tile-classification needs input.mpp and input.channels 3 (RGB)")
        if self.card.output.activation is not Activation.SOFTMAX:
            raise ValueError("training produces a 2-channel (background, label) softmax network")
        if self.init_from is not None and self.init_from.key == f"{self.card.name}@{self.card.version}":
            raise ValueError("card name@version must differ from init_from (versions are immutable)")
        return self

    @property
    def task(self) -> Task:
        return KIND_TASK[self.kind]


def load_recipe(path: str | Path) -> Recipe:
    """Read, validate and check a recipe YAML; relative paths resolve against its folder."""
    path = Path(path)
    try:
        recipe = Recipe.model_validate(_read_yaml(path), context={"base": path.parent.resolve()})
    except ValidationError as exc:
        raise RecipeError(path, str(exc)) from exc
    check_architecture(recipe)
    return recipe


def parse_recipe(data: dict[str, Any], base: Path | None = None) -> Recipe:
    """Validate a recipe given as a mapping (tests, notebooks); errors become ``RecipeError``."""
    try:
        recipe = Recipe.model_validate(data, context={"base": base})
    except ValidationError as exc:
        raise RecipeError("<mapping>", str(exc)) from exc
    check_architecture(recipe)
    return recipe


def load_data_spec(path: str | Path) -> DataSpec:
    """Read a data section (``data: {...}`` or the bare mapping) for ``hoichan evaluate``."""
    path = Path(path)
    raw = _read_yaml(path)
    raw = raw if "data" in raw else {"data": raw}
    try:
        return DataSection.model_validate(raw, context={"base": path.parent.resolve()}).data
    except ValidationError as exc:
        raise RecipeError(path, str(exc)) from exc


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(path, str(exc)) from exc
    if not isinstance(data, dict):
        raise RecipeError(path, "must be a YAML mapping")
    return data


def check_architecture(recipe: Recipe) -> None:
    """The architecture exists and can do the recipe's kind (imports torch, so only at train time)."""
    from models.networks import ARCHITECTURES

    arch = ARCHITECTURES.get(recipe.architecture.name)
    if arch is None:
        raise UnknownArchitectureError(recipe.architecture.name, list(ARCHITECTURES))
    if arch.spatial_dims != recipe.input.spatial_dims:
        reason = f"it is {arch.spatial_dims}D, the recipe is {recipe.input.spatial_dims}D"
        raise ArchitectureMismatchError(arch.name, recipe.kind, reason)
    is_classifier = arch.task in _CLASSIFIER_TASKS
    if is_classifier != (recipe.task in _CLASSIFIER_TASKS):
        raise ArchitectureMismatchError(arch.name, recipe.kind, f"it is a {arch.task.value} network")
