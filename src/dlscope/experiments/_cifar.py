"""What the CIFAR-10 experiments (2, 3, 4, 7, 8, 9) share: SPEC's common settings, their checks,
and the training with separate evaluation passes."""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import models
from ..findings import finite_or_none
from ..engine import Ensemble, Trainer, TrainConfig, evaluate_classifier
from ._base import ConfigError, seeds_for

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

# What the settings of a CIFAR-10 experiment mean (_base.py): `seeds` models per configuration,
# trained `epochs` epochs on `train_size` images
CIFAR_WORK = {"models": ("seeds",), "length": ("epochs",), "data": ("train_size",)}
CIFAR_POSITIVE = ("seeds", "epochs", "batch_size", "lr")
CIFAR_NON_NEGATIVE = ("train_size", "test_size")
# a comparison across batch sizes and learning rates (interpolation, sensitivity): side_budget's
# settings, the compared values and the curvature measures' step counts
COMPARISON_POSITIVE = ("seeds", "epochs", "min_steps", "batch_sizes", "lrs", "curvature_max_steps", "keskar_steps")


def check_model(name: str, key: str = "models") -> None:
    if name not in models.names() or models.info(name)["input_shape"] != (3, 32, 32):
        raise ConfigError(f"{key}: {name!r} is not a CIFAR-10 model of the zoo")


def check_sizes(settings: dict) -> None:
    if not 0 < settings["train_size"] <= 50000 or not 0 < settings["test_size"] <= 10000:
        raise ConfigError("train_size must be in 1..50000 and test_size in 1..10000")


def validate_models_and_sizes(settings: dict) -> None:
    """The checks of an experiment that trains each of settings["models"] on CIFAR-10."""
    for m in settings["models"]:
        check_model(m)
    check_sizes(settings)


def train_cifar(settings: dict, ctx, model: str, seeds: list[int], lr=None, batch_size=None, checkpoint=None, budget=None):
    """Train an ensemble of `model` (one member per seed; lr one value or one per member) on the
    CIFAR-10 subset of settings. Train and test loss/accuracy (train: a separate pass over the
    un-augmented training set) are recorded at initialisation, every settings["eval_every"] epochs
    and after the last, with the epoch in history["epoch"]. budget: side_budget's, whose
    epochs_trained, lr_step and eval_every replace the settings' epochs, lr_step and eval_every.
    Returns (trainer, data)."""
    data = ctx.load_data("cifar10", settings["train_size"], settings["test_size"])
    ens = Ensemble.from_seeds(model, seeds, ctx.device)
    overrides = {k: v for k, v in (("lr", lr), ("batch_size", batch_size)) if v is not None}
    if budget is not None:
        overrides |= {"epochs": budget["epochs_trained"], "lr_step": budget["lr_step"]}
    train_config = TrainConfig.from_settings(settings, **overrides)
    every = max(1, (budget or settings).get("eval_every", 1))

    def evaluate(t: Trainer) -> dict:
        if t.epoch % every and t.epoch != train_config.epochs:
            return {}  # evaluation passes cost about a third of training on a CPU: skip some
        tr = evaluate_classifier(t.ens, data.train.x, data.train.y)
        te = evaluate_classifier(t.ens, data.test.x, data.test.y)
        return {
            "epoch": torch.full((t.ens.n,), t.epoch),
            "train_loss": tr["loss"],
            "train_acc": tr["acc"],
            "test_loss": te["loss"],
            "test_acc": te["acc"],
        }

    trainer = Trainer(ens, train_config, seeds)
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


def train_model(settings: dict, ctx) -> dict:
    """The trial of one CIFAR model (settings["model"]) trained on all the run's seeds as one
    ensemble (cifar-depth, param-count): every metric [evaluations, N], at initialisation and
    every eval_every epochs (the epoch in "epoch")."""
    seeds = seeds_for(settings, settings["seeds"])
    trainer, _ = train_cifar(settings, ctx, settings["model"], seeds)
    return {
        "model": settings["model"],
        "params": trainer.ens.n_params(),
        "seeds": seeds,
        **history(trainer),
        "diverged": diverged(trainer),
    }


def diverged(trainer: Trainer) -> list[bool]:
    """Per member: a non-finite training loss at any epoch, or non-finite final metrics."""
    final = torch.stack([trainer.history[k][-1] for k in METRICS])
    return (trainer.diverged | ~torch.isfinite(final).all(0)).tolist()


METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")
SPLIT_COLORS = {"train": "tab:blue", "test": "tab:orange", "sensitivity": "tab:green"}


def side_budget(settings: dict, batch_size: int) -> dict:
    """The training budget of one configuration of a comparison across batch sizes (or lrs):
    at least settings["epochs"] epochs and at least settings["min_steps"] optimizer steps, in whole epochs;
    the StepLR drop and the evaluations stretched in proportion. Returns what train_cifar(budget=)
    trains with, epochs_trained (not the requested "epochs"), lr_step and eval_every, and the
    step count, steps."""
    per_epoch = math.ceil(settings["train_size"] / min(batch_size, settings["train_size"]))
    epochs = max(settings["epochs"], math.ceil(settings["min_steps"] / per_epoch))
    stretch = epochs / settings["epochs"]
    lr_step = settings.get("lr_step") or None
    return {
        "epochs_trained": epochs,
        "lr_step": max(1, round(lr_step * stretch)) if lr_step else None,
        "eval_every": max(1, round(settings.get("eval_every", 1) * stretch)),
        "steps": epochs * per_epoch,
    }


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last, smaller batch counts as a step)."""
    return math.ceil(train_size / batch_size)


def seed_rows(r: dict, train_size: int, batch_size: int, **fields) -> list[dict]:
    """One results row per member (seed) of a train_model result (history() + "seeds" +
    "diverged"): the final metrics, where the training ended (its final train loss, the epochs
    and optimizer steps it got), and whether it diverged. A diverged member's metrics are None
    (its accuracy would be that of NaN outputs, not of a model). `fields` are added to every row."""
    epochs = int(r["epoch"][-1])
    rows = []
    for i, seed in enumerate(r["seeds"]):
        bad = bool(r["diverged"][i])
        row = {**fields, "seed": seed}
        for k in METRICS:
            row[k] = None if bad else finite_or_none(r[k][-1, i])
        row["final_batch_loss"] = None if bad else finite_or_none(r["batch_loss"][-1, i]) if len(r["batch_loss"]) else None
        # still learning? the fall of the train loss since the evaluation before the last one
        # (none when that one is the initialisation)
        before = int(r["epoch"][-2]) if len(r["epoch"]) > 1 else 0
        drop = None if bad or before == 0 else finite_or_none(r["train_loss"][-2, i] - r["train_loss"][-1, i])
        row.update(train_loss_drop=drop, drop_epochs=epochs - before if drop is not None else None)
        row.update(epochs=epochs, steps=epochs * steps_per_epoch(train_size, batch_size), diverged=bad)
        rows.append(row)
    return rows


def per_model_table(rows: list[dict], models: list[str], keys=METRICS) -> list[dict]:
    """The median over seeds of each final metric, per model (diverged seeds left out):
    {"model", "n", "diverged", "<key>_median", ...}."""
    out = []
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        if not mine:
            continue
        row = {
            "model": m,
            **({"params": mine[0]["params"]} if "params" in mine[0] else {}),
            "n": sum(not r["diverged"] for r in mine),
            "diverged": sum(r["diverged"] for r in mine),
        }
        for k in keys:
            vals = [r[k] for r in mine if r[k] is not None]
            row[f"{k}_median"] = float(np.median(vals)) if vals else None
        out.append(row)
    return out


def median_over_seeds(rows: list[dict], model: str, key: str) -> dict:
    """For a module's ours(): {"value": median over a model's finite seeds, "note": "median of n
    seeds"} (value None if every seed diverged)."""
    vals = [r[key] for r in rows if r.get("model") == model and isinstance(r.get(key), (int, float))]
    return {"value": float(np.median(vals)) if vals else None, "note": f"median of {len(vals)} seeds"}


# --------------------------------------------------------------------------- figures

BAND = "IQR"  # what the band around a median curve spans: the seeds' interquartile range


def median_band(ax, x, values, color, label: str, style: str = "-", diverged=None, **kw) -> None:
    """Plot the median over seeds of values [len(x), n] with the seeds' interquartile range as a
    band; the legend label gets n. Members marked in `diverged` (or with any non-finite value) are
    left out and counted in the label."""
    v = torch.as_tensor(values, dtype=torch.float64)
    v = v if v.dim() == 2 else v[:, None]
    ok = torch.isfinite(v).all(0)
    if diverged is not None:
        ok &= ~torch.as_tensor(diverged, dtype=torch.bool)
    n, lost = int(ok.sum()), v.shape[1] - int(ok.sum())
    text = f"{label} (n={n}" + (f", {lost} diverged" if lost else "") + ")"
    if n == 0:
        ax.plot([], [], style, color=color, label=text, **kw)
        return
    lo, med, hi = np.quantile(v[:, ok].numpy(), [0.25, 0.5, 0.75], axis=1)
    ax.plot(x, med, style, color=color, label=text, **kw)
    if n > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
