"""Fine-tuning from a registered version: the feedback loop's "export -> fine-tune" step.

A recipe with ``init_from: NAME@VERSION`` (typically reading a ``manifest`` source, the
export of specialist-confirmed findings) starts from that version's torch weights
(``weights.pt`` in the registry, verified against the card's ``weights_sha256``)
instead of random ones. Everything that decides whether the weights fit is checked
before any data is loaded or any epoch runs: the parent exists, has weights, was
trained as the same architecture for the same task and channel count, and its state
dict has exactly the keys and shapes of the recipe's network.

The result is registered like any run: a new *candidate* version (shadow) whose card
records ``parent``; ``hoichan models promote`` makes it live after review.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch

from models.card import ModelCard
from models.registry import ModelRegistry, RegisteredModel
from training.errors import InitFromError, InitFromMismatchError
from training.recipe import Recipe

StateDict = dict[str, torch.Tensor]
_SHOWN = 3


@dataclass(frozen=True)
class Parent:
    """The registered version a run fine-tunes, with its verified state dict."""

    model: RegisteredModel
    state_dict: StateDict

    @property
    def key(self) -> str:
        return self.model.key


def resolve_parent(recipe: Recipe, registry: ModelRegistry | None) -> Parent | None:
    """The recipe's ``init_from`` version and its weights, or ``None`` when training from scratch.

    Raises ``InitFromError`` without a registry, ``ModelNotFoundError`` for an unknown version,
    ``MissingWeightsError`` for a version registered without weights and
    ``InitFromMismatchError`` when its card says it is another kind of network.
    """
    if recipe.init_from is None:
        return None
    if registry is None:
        raise InitFromError(recipe.init_from.key, "fine-tuning needs the model registry to read it from")
    model = registry.get(recipe.init_from.name, recipe.init_from.version)
    check_parent_card(recipe, model.card)
    data = registry.load_weights(model)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt archive
        raise InitFromError(model.key, f"weights.pt is not a readable state dict ({exc})") from exc
    if not isinstance(state, dict):
        raise InitFromError(model.key, f"weights.pt holds a {type(state).__name__}, not a state dict")
    return Parent(model=model, state_dict=state)


def check_parent_card(recipe: Recipe, card: ModelCard) -> None:
    """The parent was trained as the recipe's architecture, task and input channel count."""
    arch, kind = recipe.architecture.name, recipe.kind
    if card.architecture != arch:
        raise InitFromMismatchError(
            card.key, arch, kind, f"it is a {card.architecture or 'unknown'!r} network"
        )
    if card.task is not recipe.task:
        raise InitFromMismatchError(card.key, arch, kind, f"it is a {card.task.value} model")
    if card.input.channels != recipe.input.channels:
        reason = f"it takes {card.input.channels} input channels, the recipe {recipe.input.channels}"
        raise InitFromMismatchError(card.key, arch, kind, reason)


def load_parent_weights(module: torch.nn.Module, parent: Parent, recipe: Recipe) -> None:
    """Copy the parent's weights into ``module``; any key or shape difference is a clear error."""
    own = module.state_dict()
    theirs = parent.state_dict
    problems = []
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)
    ]
    if missing:
        problems.append(f"{len(missing)} parameters missing ({', '.join(missing[:_SHOWN])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected parameters ({', '.join(unexpected[:_SHOWN])})")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ ({'; '.join(shapes[:_SHOWN])})")
    if problems:
        reason = "; ".join(problems) + ": architecture.overrides must match the parent's recipe"
        raise InitFromMismatchError(parent.key, recipe.architecture.name, recipe.kind, reason)
    module.load_state_dict(theirs, strict=True)
