"""Training: one entry (`trainer`) over the general path (`Ensemble`, `Trainer`) and the fast flat-MLP
path (`fast_mlp.FastMLPTrainer`), batched Adam, and the plain reference loop."""

from .ensemble import Ensemble
from .entry import trainer, uses_fast_path
from .optim import BatchedAdam, step_lr_scale
from .train import (
    TrainConfig,
    Trainer,
    epoch_generator,
    evaluate_classifier,
    evaluate_regression,
    loss_per_member,
    train_reference,
)

__all__ = [
    "Ensemble",
    "BatchedAdam",
    "step_lr_scale",
    "TrainConfig",
    "Trainer",
    "epoch_generator",
    "evaluate_classifier",
    "evaluate_regression",
    "loss_per_member",
    "train_reference",
    "trainer",
    "uses_fast_path",
]
