"""What the CIFAR-10 experiments (2, 3, 4, 7, 8, 9) share: SPEC's common settings, their checks,
and the training with separate evaluation passes."""

from __future__ import annotations

import torch

from .. import models
from ..engine import Ensemble, Trainer, TrainConfig, evaluate_classifier
from .base import ConfigError

# SPEC, common settings: Adam lr 4e-4, weight decay 1e-4 (coupled), StepLR step 10 gamma 0.1 per
# epoch, random crop + flip augmentation, the whole data set.
COMMON = {
    "lr": 4e-4,
    "weight_decay": 1e-4,
    "lr_step": 10,
    "lr_gamma": 0.1,
    "augment": True,
    "train_size": 50000,
    "test_size": 10000,
    "amp": False,  # bf16 autocast in training (not evaluation); off: the study's numbers in float32
}


def check_model(name: str, key: str = "models") -> None:
    if name not in models.names() or models.info(name)["input_shape"] != (3, 32, 32):
        raise ConfigError(f"{key}: {name!r} is not a CIFAR-10 model of the zoo")


def check_sizes(cfg: dict) -> None:
    if not 0 < cfg["train_size"] <= 50000 or not 0 < cfg["test_size"] <= 10000:
        raise ConfigError("train_size must be in 1..50000 and test_size in 1..10000")


def validate_models_and_sizes(cfg: dict) -> None:
    """The checks of an experiment that trains each of cfg["models"] on CIFAR-10."""
    for m in cfg["models"]:
        check_model(m)
    check_sizes(cfg)


def train_cifar(args: dict, ctx, model: str, seeds: list[int], lr=None, batch_size=None, checkpoint=None):
    """Train an ensemble of `model` (one member per seed; lr one value or one per member) on the
    CIFAR-10 subset of args. Train and test loss/accuracy (train: a separate pass over the
    un-augmented training set) are recorded at initialisation, every args["eval_every"] epochs
    and after the last, with the epoch in history["epoch"]. Returns (trainer, data)."""
    data = ctx.load_data("cifar10", args["train_size"], args["test_size"])
    ens = Ensemble.from_seeds(model, seeds, ctx.device)
    cfg = TrainConfig(
        epochs=args["epochs"],
        batch_size=batch_size or args["batch_size"],
        lr=args["lr"] if lr is None else lr,
        weight_decay=args["weight_decay"],
        lr_step=args.get("lr_step") or None,
        lr_gamma=args.get("lr_gamma", 0.1),
        augment=args.get("augment", True),
        amp=args.get("amp", False),
    )
    every = max(1, args.get("eval_every", 1))

    def evaluate(t: Trainer) -> dict:
        if t.epoch % every and t.epoch != cfg.epochs:
            return {}  # evaluation passes cost about a third of training on a CPU: skip some
        tr = evaluate_classifier(t.ens, data.train.x, data.train.y)
        te = evaluate_classifier(t.ens, data.test.x, data.test.y)
        return {"epoch": torch.full((t.ens.n,), t.epoch), "train_loss": tr["loss"], "train_acc": tr["acc"],
                "test_loss": te["loss"], "test_acc": te["acc"]}

    trainer = Trainer(ens, cfg, seeds)
    ckpt = ctx.checkpoint if checkpoint is None else checkpoint
    trainer.run(data.train.x, data.train.y, evaluate=evaluate, checkpoint=ckpt)
    return trainer, data


def history(trainer: Trainer) -> dict:
    """The evaluated epochs as [E] and every metric as [E, N]; batch_loss as [epochs, N]."""
    h = trainer.history
    out = {k: torch.stack(h[k]) for k in METRICS}
    out["epoch"] = torch.stack(h["epoch"])[:, 0].long()
    out["batch_loss"] = torch.stack(h["batch_loss"])
    return out


def diverged(trainer: Trainer) -> list[bool]:
    """Per member: a non-finite training loss at any epoch, or non-finite final metrics."""
    final = torch.stack([trainer.history[k][-1] for k in METRICS])
    return (trainer.diverged | ~torch.isfinite(final).all(0)).tolist()


METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")
