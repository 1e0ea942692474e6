"""On-disk model registry: one folder per model version.

Layout (``root/<name>/<version>/``)::

    card.json    the ModelCard (immutable once registered)
    model.onnx   the network; its sha256 is in the card
    weights.pt   optional: the torch state dict it was exported from (sha256 in the card as
                 ``weights_sha256``), what fine-tuning starts from
    state.json   lifecycle state (candidate / active / retired) and its history

The state lives beside the card rather than in it because the card is what was
reviewed and checksummed; promoting or retiring must not rewrite it. The ONNX
bytes are verified against the card every time they are loaded, so a file
swapped or corrupted on disk is refused instead of silently served. The same
holds for ``weights.pt``; the registry only hands out its verified bytes and
never imports torch, so serving installs read ONNX without it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.card import ModelCard, ModelState, dump_card, load_card
from models.errors import (
    ChecksumMismatchError,
    MissingWeightsError,
    ModelExistsError,
    ModelNotFoundError,
    ModelStateError,
    NoActiveVersionError,
)

CARD_FILE = "card.json"
CARD_FILE_YAML = "card.yaml"
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.pt"
STATE_FILE = "state.json"
DEFAULT_ROOT = Path("var/models")
ROOT_ENV = "HOICHAN_MODELS_DIR"
_CHUNK = 1 << 20


def default_root() -> Path:
    """Registry root from ``HOICHAN_MODELS_DIR``, else ``./var/models`` (the embedded layout)."""
    return Path(os.environ.get(ROOT_ENV, str(DEFAULT_ROOT)))


def sha256_file(path: Path) -> str:
    """Streamed sha256 so multi-hundred-MB models are not read into memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class RegisteredModel:
    """A model version as found on disk: its card, folder and lifecycle state."""

    card: ModelCard
    directory: Path
    state: ModelState

    @property
    def onnx_path(self) -> Path:
        return self.directory / ONNX_FILE

    @property
    def weights_path(self) -> Path:
        """Where the torch state dict lives (it exists only when the card names ``weights_sha256``)."""
        return self.directory / WEIGHTS_FILE

    @property
    def has_weights(self) -> bool:
        """Whether this version was registered with torch weights (so it can be fine-tuned)."""
        return self.card.weights_sha256 is not None

    @property
    def key(self) -> str:
        return self.card.key


class ModelRegistry:
    """Register, look up, verify, promote and retire model versions under one root folder."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    # -- reading ---------------------------------------------------------------------------------
    def list_models(self, name: str | None = None, state: ModelState | None = None) -> list[RegisteredModel]:
        """All versions (optionally of one name / in one state), sorted by name then version folder."""
        found = [self._read(d) for d in self._version_dirs(name)]
        return [m for m in found if state is None or m.state is state]

    def get(self, name: str, version: str) -> RegisteredModel:
        directory = self.root / name / version
        if not directory.is_dir():
            raise ModelNotFoundError(name, version, self.root)
        return self._read(directory)

    def active(self, name: str) -> RegisteredModel:
        """The promoted version of ``name``: what the service routes to."""
        if not (self.root / name).is_dir():
            raise ModelNotFoundError(name, None, self.root)
        actives = self.list_models(name, ModelState.ACTIVE)
        if not actives:
            raise NoActiveVersionError(name)
        return actives[0]

    def resolve(self, name: str, version: str | None = None) -> RegisteredModel:
        return self.get(name, version) if version else self.active(name)

    def active_cards(self) -> list[ModelCard]:
        """Cards of every active version, the input of ``inference.routing.route``."""
        return [m.card for m in self.list_models(state=ModelState.ACTIVE)]

    def load_onnx(self, model: RegisteredModel) -> bytes:
        """The ONNX bytes, verified against the card; the verified bytes are what gets served."""
        data = model.onnx_path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        expected = model.card.onnx_sha256 or ""
        if actual != expected:
            raise ChecksumMismatchError(model.key, expected, actual)
        return data

    def load_weights(self, model: RegisteredModel) -> bytes:
        """The torch state dict's bytes (``torch.load`` them), verified against the card's sha256.

        Raises ``MissingWeightsError`` for a version registered without weights (or whose
        file is gone) and ``ChecksumMismatchError`` when the file is not the one registered.
        """
        expected = model.card.weights_sha256
        if expected is None:
            raise MissingWeightsError(
                model.key, "it was registered from ONNX only; retrain it from its recipe"
            )
        if not model.weights_path.is_file():
            raise MissingWeightsError(model.key, f"{model.weights_path} is missing")
        data = model.weights_path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ChecksumMismatchError(f"{model.key} (weights)", expected, actual)
        return data

    def verify(self, model: RegisteredModel) -> None:
        """Check the ONNX file's (and weights', when registered) sha256 against the card."""
        actual = sha256_file(model.onnx_path)
        expected = model.card.onnx_sha256 or ""
        if actual != expected:
            raise ChecksumMismatchError(model.key, expected, actual)
        if model.card.weights_sha256 is not None:
            if not model.weights_path.is_file():
                raise MissingWeightsError(model.key, f"{model.weights_path} is missing")
            actual = sha256_file(model.weights_path)
            if actual != model.card.weights_sha256:
                raise ChecksumMismatchError(f"{model.key} (weights)", model.card.weights_sha256, actual)

    # -- writing ---------------------------------------------------------------------------------
    def register(
        self, card: ModelCard, onnx_path: Path | str, weights_path: Path | str | None = None
    ) -> RegisteredModel:
        """Copy the ONNX file (and torch weights) in and write the card with their sha256s.

        The new version is a candidate. If the card already names a sha256 the file
        must match it (the card was reviewed for that exact file); otherwise the
        computed digest is recorded. Without ``weights_path`` the version is ONNX-only
        (``weights_sha256`` is cleared: the card describes what the registry holds) and
        cannot be fine-tuned.
        """
        source = Path(onnx_path)
        actual = sha256_file(source)
        if card.onnx_sha256 is not None and card.onnx_sha256 != actual:
            raise ChecksumMismatchError(card.key, card.onnx_sha256, actual)
        weights = Path(weights_path) if weights_path is not None else None
        weights_sha = sha256_file(weights) if weights is not None else None
        if weights_sha is not None and card.weights_sha256 not in (None, weights_sha):
            raise ChecksumMismatchError(f"{card.key} (weights)", card.weights_sha256 or "", weights_sha)
        card = card.model_copy(update={"onnx_sha256": actual, "weights_sha256": weights_sha})
        final = self.root / card.name / card.version
        with self._lock(card.name):
            if final.exists():
                raise ModelExistsError(card.name, card.version)
            self._write_version(card, source, final, weights)
        return self._read(final)

    def promote(self, name: str, version: str) -> RegisteredModel:
        """Make ``version`` the active one; a previously active version goes back to candidate."""
        with self._lock(name):
            model = self.get(name, version)
            if model.state is ModelState.RETIRED:
                raise ModelStateError(model.key, model.state.value, "promote")
            self.verify(model)
            for other in self.list_models(name, ModelState.ACTIVE):
                if other.card.version != version:
                    self._set_state(other.directory, ModelState.CANDIDATE)
            self._set_state(model.directory, ModelState.ACTIVE)
        return self.get(name, version)

    def retire(self, name: str, version: str) -> RegisteredModel:
        """Take a version out of service for good; it stays on disk for provenance of past findings."""
        with self._lock(name):
            model = self.get(name, version)
            if model.state is ModelState.RETIRED:
                raise ModelStateError(model.key, model.state.value, "retire")
            self._set_state(model.directory, ModelState.RETIRED)
        return self.get(name, version)

    # -- internals -------------------------------------------------------------------------------
    def _version_dirs(self, name: str | None) -> list[Path]:
        if not self.root.is_dir():
            return []
        names = [self.root / name] if name else sorted(p for p in self.root.iterdir() if p.is_dir())
        return [v for n in names if n.is_dir() for v in sorted(n.iterdir()) if _is_version_dir(v)]

    def _read(self, directory: Path) -> RegisteredModel:
        card_path = directory / CARD_FILE
        if not card_path.exists():
            card_path = directory / CARD_FILE_YAML
        state = _read_state(directory / STATE_FILE)
        return RegisteredModel(card=load_card(card_path), directory=directory, state=state)

    def _write_version(self, card: ModelCard, source: Path, final: Path, weights: Path | None) -> None:
        """Build the folder under a temporary name and rename it, so a crash leaves no half version."""
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=final.parent))
        try:
            shutil.copyfile(source, staging / ONNX_FILE)
            if weights is not None:
                shutil.copyfile(weights, staging / WEIGHTS_FILE)
            dump_card(card, staging / CARD_FILE)
            _write_json(staging / STATE_FILE, _state_record(ModelState.CANDIDATE, []))
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _set_state(self, directory: Path, state: ModelState) -> None:
        path = directory / STATE_FILE
        history = _read_json(path).get("history", []) if path.exists() else []
        _write_json(path, _state_record(state, history))

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """An exclusive lock per model name so two CLI calls cannot both promote."""
        (self.root / name).mkdir(parents=True, exist_ok=True)
        with (self.root / name / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _is_version_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def _state_record(state: ModelState, history: list[dict[str, Any]]) -> dict[str, Any]:
    at = datetime.now(UTC).isoformat()
    return {"state": state.value, "history": [*history, {"state": state.value, "at": at}]}


def _read_state(path: Path) -> ModelState:
    if not path.exists():
        return ModelState.CANDIDATE
    return ModelState(_read_json(path)["state"])


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write then rename: readers never see a half-written state file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
