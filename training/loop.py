"""The epoch loop: train, validate, keep the best weights, stop early.

One function, parameterised by a ``TaskAdapter``, for every model kind. The
best state dict is checkpointed to disk whenever validation improves and
restored at the end, so what is exported is the best epoch, not the last.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from models.card import ModelCard
from training.data import DataBundle
from training.evaluation import HEADLINE, Evaluation, evaluate
from training.recipe import EarlyStopping, OptimizerSpec, Recipe
from training.tasks import TaskAdapter

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "best.pt"


@dataclass
class FitResult:
    """What happened: per-epoch history, the best epoch and why training stopped."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = -np.inf
    stop_reason: str = "max epochs"
    seconds: float = 0.0
    checkpoint: Path = Path(CHECKPOINT_FILE)


def torch_network(module: torch.nn.Module) -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
    """The module as a ``numpy -> numpy`` callable (eval mode, no grad), like an ONNX session."""

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        module.eval()
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    return run


def make_scheduler(
    optimizer: torch.optim.Optimizer, spec: OptimizerSpec, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step cosine decay to zero over the planned run (short CPU runs converge better), or constant."""
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def make_optimizer(module: torch.nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    params = module.parameters()
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


class _Stopper:
    """Early stopping on a metric where higher is better."""

    def __init__(self, spec: EarlyStopping) -> None:
        self.spec = spec
        self.best = -np.inf
        self.bad_epochs = 0

    def improved(self, metric: float) -> bool:
        if metric > self.best + self.spec.min_delta:
            self.best, self.bad_epochs = metric, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.spec.patience


def fit(
    module: torch.nn.Module,
    adapter: TaskAdapter,
    data: DataBundle,
    recipe: Recipe,
    card: ModelCard,
    out_dir: Path,
) -> FitResult:
    """Train ``module`` in place; on return it holds the best validation weights."""
    metric_name = HEADLINE[recipe.kind]
    optimizer = make_optimizer(module, recipe.optimizer)
    loss_fn = adapter.loss()
    rng = np.random.default_rng([recipe.seed, 2])
    steps = recipe.steps_per_epoch or adapter.default_steps(data.train, recipe.batch_size)
    scheduler = make_scheduler(optimizer, recipe.optimizer, steps * recipe.epochs)
    checkpoint = out_dir / CHECKPOINT_FILE
    stopper, result = _Stopper(recipe.early_stopping), FitResult(checkpoint=checkpoint)
    start = time.perf_counter()
    bar = tqdm(range(1, recipe.epochs + 1), desc=card.key, unit="epoch", disable=not sys.stderr.isatty())
    for epoch in bar:
        loss = _train_epoch(
            module, adapter, data, (optimizer, scheduler), loss_fn, rng, recipe.batch_size, steps
        )
        evaluation = evaluate(torch_network(module), data.val, card, recipe.batch_size)
        metric = evaluation.metrics[metric_name]
        result.history.append(_epoch_record(epoch, loss, evaluation, time.perf_counter() - start))
        bar.set_postfix(loss=f"{loss:.4f}", **{metric_name: f"{metric:.4f}"})
        log.info("%s epoch %d: loss %.4f val %s %.4f", card.key, epoch, loss, metric_name, metric)
        if stopper.improved(metric):
            result.best_epoch, result.best_metric = epoch, metric
            torch.save(module.state_dict(), checkpoint)
        if stopper.should_stop:
            result.stop_reason = (
                f"early stopping (no improvement for {recipe.early_stopping.patience} epochs)"
            )
            break
        if recipe.time_limit_s is not None and time.perf_counter() - start > recipe.time_limit_s:
            result.stop_reason = f"time limit {recipe.time_limit_s:.0f} s"
            break
    bar.close()
    result.seconds = time.perf_counter() - start
    module.load_state_dict(torch.load(checkpoint, weights_only=True))
    return result


def _train_epoch(
    module: torch.nn.Module,
    adapter: TaskAdapter,
    data: DataBundle,
    optimization: tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler],
    loss_fn: torch.nn.Module,
    rng: np.random.Generator,
    batch_size: int,
    steps: int,
) -> float:
    optimizer, scheduler = optimization
    module.train()
    losses = []
    for images, targets in adapter.batches(data.train, rng, batch_size, steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(module(images), targets)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def _epoch_record(epoch: int, loss: float, evaluation: Evaluation, seconds: float) -> dict[str, float]:
    return {"epoch": float(epoch), "train_loss": loss, "seconds": seconds, **evaluation.metrics}
