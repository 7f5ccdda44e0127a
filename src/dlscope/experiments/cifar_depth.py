"""2. cifar-depth: deep vs shallow CNNs on CIFAR-10 (cnn-1, cnn-2, cnn-7).

The three architectures differ, so each is its own trial (seeds of one model share an ensemble).
Train metrics come from a separate evaluation pass over the un-augmented training set.
"""

from __future__ import annotations

import torch

from .. import models
from ..engine import Ensemble, Trainer, TrainConfig, evaluate_classifier
from .base import ConfigError, Trial, save_fig, seeds_for

NAME = "cifar-depth"
TITLE = "Deep vs shallow CNNs on CIFAR-10"

_FULL = {
    "models": ["cnn-1", "cnn-2", "cnn-7"],
    "epochs": 100,
    "batch_size": 64,
    "lr": 4e-4,
    "weight_decay": 1e-4,
    "lr_step": 10,
    "lr_gamma": 0.1,
    "augment": True,
    "train_size": 50000,
    "test_size": 10000,
    "seeds": 1,
}
PROFILES = {
    "smoke": {**_FULL, "epochs": 2, "lr_step": 1, "train_size": 600, "test_size": 300},
    "quick": {**_FULL, "epochs": 8, "lr_step": 6, "lr": 1e-3, "train_size": 8000, "test_size": 2000},
    "full": _FULL,
}

# The original study's numbers at epoch 100 (SPEC): test loss, test accuracy.
REFERENCE = {"cnn-1": (1.8815, 0.5873), "cnn-2": (0.8913, 0.6870), "cnn-7": (0.6874, 0.7681)}


def validate(cfg: dict) -> None:
    for m in cfg["models"]:
        if m not in models.names() or models.info(m)["input_shape"] != (3, 32, 32):
            raise ConfigError(f"models: {m!r} is not a CIFAR-10 model of the zoo")
    if not 0 < cfg["train_size"] <= 50000 or not 0 < cfg["test_size"] <= 10000:
        raise ConfigError("train_size must be in 1..50000 and test_size in 1..10000")


def trials(cfg: dict) -> list[Trial]:
    return [Trial(key=m, fn=train_model, args={**cfg, "model": m}, label=m) for m in cfg["models"]]


def train_classifier(args: dict, ctx, model: str, seeds: list[int], lr=None, batch_size=None, on_epoch=None):
    """Train an ensemble of `model` on CIFAR-10 as SPEC's common settings say; return
    (trainer, data) with per-epoch train_loss/train_acc/test_loss/test_acc in trainer.history."""
    data = ctx.load_data("cifar10", args["train_size"], args["test_size"])
    ens = Ensemble.from_seeds(model, seeds, ctx.device)
    cfg = TrainConfig(
        epochs=args["epochs"],
        batch_size=batch_size or args["batch_size"],
        lr=args["lr"] if lr is None else lr,
        weight_decay=args["weight_decay"],
        lr_step=args.get("lr_step"),
        lr_gamma=args.get("lr_gamma", 0.1),
        augment=args.get("augment", True),
    )
    trainer = Trainer(ens, cfg, seeds)

    def evaluate(t: Trainer) -> dict:
        tr = evaluate_classifier(t.ens, data.train.x, data.train.y)
        te = evaluate_classifier(t.ens, data.test.x, data.test.y)
        return {"train_loss": tr["loss"], "train_acc": tr["acc"], "test_loss": te["loss"], "test_acc": te["acc"]}

    trainer.run(data.train.x, data.train.y, evaluate=evaluate, checkpoint=ctx.checkpoint, on_epoch=on_epoch)
    return trainer, data


def train_model(args: dict, ctx) -> dict:
    seeds = seeds_for(args, args["seeds"])
    trainer, _ = train_classifier(args, ctx, args["model"], seeds)
    h = trainer.history
    return {
        "model": args["model"],
        "params": trainer.ens.n_params(),
        "seeds": seeds,
        **{k: torch.stack(h[k]) for k in ("train_loss", "train_acc", "test_loss", "test_acc")},  # [epochs+1, N]
        "diverged": trainer.diverged.tolist(),
    }


METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")


def summarize(cfg: dict, results: dict) -> dict:
    rows = []
    for m in cfg["models"]:
        r = results.get(m)
        if r is None:
            continue
        row = {"model": m, "params": r["params"]}
        for k in METRICS:  # final epoch, mean over seeds
            row[k] = r[k][-1].mean().item()
        if len(r["seeds"]) > 1:
            row["test_acc_std"] = r["test_acc"][-1].std().item()
        row["diverged"] = any(r["diverged"])
        if m in REFERENCE:
            row["original_test_loss"], row["original_test_acc"] = REFERENCE[m]
        rows.append(row)
    return {"results": rows}


def metrics(cfg: dict, results: dict) -> list[dict]:
    rows = []
    for m, r in results.items():
        for i, seed in enumerate(r["seeds"]):
            for k in METRICS:
                for e, v in enumerate(r[k][:, i].tolist()):
                    rows.append({"model": m, "seed": seed, "epoch": e, "metric": k, "value": v})
    return rows


def figures(cfg: dict, results: dict, fig_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(cfg["models"], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for m, r in results.items():
        for split, style in (("train", "--"), ("test", "-")):
            ax_l.plot(r[f"{split}_loss"].mean(1), style, color=colors[m], label=f"{m} {split}")
            ax_a.plot(100 * r[f"{split}_acc"].mean(1), style, color=colors[m], label=f"{m} {split}")
    ax_l.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss (dashed: train, solid: test)")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy (dashed: train, solid: test)")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    ax_a.legend(fontsize=8, ncol=2, loc="best")
    path = save_fig(fig, fig_dir / "curves.png")

    # the table of final values as a figure too, for the report
    rows = summarize(cfg, results)["results"]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.35 * len(rows)))
    ax.axis("off")
    cells = [[r["model"], f"{r['params']:,}", f"{r['train_loss']:.4f}", f"{r['test_loss']:.4f}",
              f"{100 * r['train_acc']:.2f}%", f"{100 * r['test_acc']:.2f}%"] for r in rows]
    table = ax.table(cellText=cells, colLabels=["model", "params", "train loss", "test loss", "train acc", "test acc"], loc="center")
    table.scale(1, 1.3)
    ax.set_title(f"Final values after {cfg['epochs']} epochs")
    return [path, save_fig(fig, fig_dir / "table.png")]
