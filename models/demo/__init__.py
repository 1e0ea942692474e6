"""Demo models shipped in the repository: three small ONNX models trained on synthetic data only.

Layout: ``models/demo/<name>/<version>/`` holds ``card.json`` (its sha256 names
the ONNX file), ``model.onnx``, ``weights.pt`` (the torch state dict, its sha256
also on the card, so a demo model can be fine-tuned with ``init_from``),
``recipe.yaml`` (the training recipe that reproduces it:
``hoichan train models/demo/<name>/<version>/recipe.yaml``) and ``metrics.json``
(the training report). Every card says it is a demo model, not for clinical use.

``install_demo_models`` is what a fresh service calls on first run so that it
triages out of the box. It is pure file work (no torch, no network): verify
each shipped ONNX file against its card, register it, and promote it when no
version of that model name is live yet, so it never demotes a model an ML
engineer has promoted since.
"""

from __future__ import annotations

from pathlib import Path

from models.card import ModelState, load_card
from models.errors import ChecksumMismatchError
from models.registry import CARD_FILE, ONNX_FILE, WEIGHTS_FILE, ModelRegistry, RegisteredModel, sha256_file

DEMO_ROOT = Path(__file__).resolve().parent


def demo_model_dirs(root: Path = DEMO_ROOT) -> list[Path]:
    """The shipped ``<name>/<version>`` folders that hold a card and an ONNX file."""
    return sorted(p.parent for p in root.glob(f"*/*/{CARD_FILE}") if (p.parent / ONNX_FILE).is_file())


def install_demo_models(registry: ModelRegistry, root: Path = DEMO_ROOT) -> list[RegisteredModel]:
    """Register (if absent) and promote (if nothing of that name is active) every shipped demo model.

    Idempotent: a version already in the registry is kept as is after checking
    it is the same file (a different file under the same version is an error,
    versions are immutable). Returns the demo versions as now registered.
    """
    return [_install_one(registry, directory) for directory in demo_model_dirs(root)]


def _install_one(registry: ModelRegistry, directory: Path) -> RegisteredModel:
    card = load_card(directory / CARD_FILE)
    onnx = directory / ONNX_FILE
    actual = sha256_file(onnx)
    if card.onnx_sha256 != actual:
        raise ChecksumMismatchError(card.key, card.onnx_sha256 or "", actual)
    existing = {m.card.version: m for m in registry.list_models(card.name)}
    weights = directory / WEIGHTS_FILE
    model = existing.get(card.version) or registry.register(
        card, onnx, weights if weights.is_file() else None
    )
    if model.card.onnx_sha256 != actual:
        raise ChecksumMismatchError(model.key, model.card.onnx_sha256 or "", actual)
    if not any(m.state is ModelState.ACTIVE for m in registry.list_models(card.name)):
        model = registry.promote(card.name, card.version)
    return model
