"""One way to train: `trainer(...)` picks the fast flat-MLP path (fast_mlp.FastMLPTrainer) or the
general path (train.Trainer over an Ensemble) itself, so that no experiment has to.

Both trainers answer the same calls:
    run(x, y, evaluate=None, checkpoint=None, on_epoch=None)  train for settings.epochs;
        evaluate: a callable (trainer) -> {name: [N] values}, recorded in history at epoch 0 and
        after every epoch, or "mse": the full-data MSE as history["loss"]
    history, diverged, epoch, n, n_params
    predict(x) -> [N, n]            each member's output (one-output models)
    mse(x, y) -> [N]                the full-data MSE
    gradient(x, y, batch_size) -> {"loss", "grad_norm", ...}: the full-batch loss and gradient norm
"""

from __future__ import annotations

from .. import flat_mlp
from .ensemble import Ensemble
from .fast_mlp import FastMLPTrainer
from .train import Trainer, TrainConfig


def uses_fast_path(
    model_name: str, settings: TrainConfig | None = None, examples: int | None = None, each_epoch: bool = False
) -> bool:
    """Whether `trainer` trains this zoo model on the fast flat-MLP path: an MLP with one output,
    trained on the MSE without augmentation. each_epoch: the caller needs its evaluate/on_epoch
    after every epoch; with a full batch (examples <= batch size) the fast path trains its epochs
    in chunks, so the general path takes it."""
    if settings is not None and (settings.loss != "mse" or settings.augment):
        return False
    if each_epoch and settings is not None and examples is not None and settings.batch_size >= examples:
        return False
    return flat_mlp.supports(model_name)


def trainer(
    model_name: str,
    settings: TrainConfig,
    seeds: list[int],
    device="cpu",
    *,
    examples: int | None = None,
    each_epoch: bool = False,
    **fast_options,
) -> FastMLPTrainer | Trainer:
    """A trainer of len(seeds) members of a zoo model, member i initialised as
    torch.manual_seed(seeds[i]); models.build(model_name), on the path uses_fast_path picks.
    fast_options (dtype, compile, threads) go to the fast path alone."""
    if uses_fast_path(model_name, settings, examples, each_epoch):
        return FastMLPTrainer(model_name, settings, seeds, device, **fast_options)
    return Trainer(Ensemble.from_seeds(model_name, seeds, device), settings, seeds)
