"""Training: vectorized ensembles (`Ensemble`, `Trainer`), batched Adam, and the plain reference loop."""

from .ensemble import Ensemble
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
    "Ensemble", "BatchedAdam", "step_lr_scale", "TrainConfig", "Trainer", "epoch_generator",
    "evaluate_classifier", "evaluate_regression", "loss_per_member", "train_reference",
]  # fmt: skip
