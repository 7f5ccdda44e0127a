"""6. random-labels: an MLP memorises MNIST with random labels (Zhang et al. 2017).

The training labels are replaced by i.i.d. uniform labels from a generator seeded with the
trial's seed; the test labels stay true. Train metrics are measured on the random labels (in a
separate evaluation pass), test metrics on the true ones.
"""

from __future__ import annotations

import torch

from ..engine import Ensemble, Trainer, TrainConfig, evaluate_classifier
from .base import ConfigError, Trial, save_fig, seeds_for

NAME = "random-labels"
TITLE = "Memorising random labels (MNIST, mnist-mlp)"

# --- for the report and the progress display (see base.py)
PART = "Generalization"
COST = 18  # seconds of the quick profile on the reference CPU; only the ratios between experiments matter
LOOK_FOR = ("train loss falls and train accuracy rises on random labels while test loss "
            "rises and test accuracy stays near 10%: the network memorises (Zhang et al. 2017).")
CAPTIONS = {
    "curves.png": "Loss and accuracy against epoch: train on the random labels, test on the true labels, "
    "with chance (10%) marked (the original's Fig 14).",
}
REFERENCE = {  # the original study over 1000 epochs (SPEC)
    "what": "losses at initialisation and at the end (train on the random labels, test on the true ones)",
    "original": "over 1,000 epochs (the values are 'about')",
    "kind": "loss",
    "rows": {"initial train loss": 2.30, "final train loss": 1.15, "initial test loss": 2.30, "final test loss": 5.0},
}

_FULL = {
    "model": "mnist-mlp",
    "epochs": 1000,
    "batch_size": 100,
    "lr": 1e-4,
    "weight_decay": 0.0,
    "train_size": 60000,
    "test_size": 10000,
    "classes": 10,
    "amp": False,  # bf16 autocast in training (not evaluation)
}
PROFILES = {
    "smoke": {**_FULL, "epochs": 3, "train_size": 200, "test_size": 200},
    # 4,000 images and lr 1e-3 instead of 60,000 and 1e-4: memorised (~99% train accuracy on
    # the random labels) within 150 epochs, about 20 CPU-seconds
    "quick": {**_FULL, "epochs": 150, "lr": 1e-3, "train_size": 4000, "test_size": 2000},
    "full": _FULL,
}


def validate(cfg: dict) -> None:
    if cfg["model"] != "mnist-mlp":
        raise ConfigError("model: random-labels uses the MNIST model mnist-mlp")
    if not 0 < cfg["train_size"] <= 60000 or not 0 < cfg["test_size"] <= 10000:
        raise ConfigError("train_size must be in 1..60000 and test_size in 1..10000")
    if cfg["classes"] != 10:
        raise ConfigError("classes: MNIST has 10")


def random_labels(n: int, classes: int, seed: int, device="cpu") -> torch.Tensor:
    """n i.i.d. uniform labels in 0..classes-1, from their own generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, (n,), generator=g).to(device)


def trials(cfg: dict) -> list[Trial]:
    return [Trial(key="mnist-mlp", fn=train_random, args=cfg, label="mnist-mlp, random labels")]


def train_random(args: dict, ctx) -> dict:
    seeds = seeds_for(args, 1)
    data = ctx.load_data("mnist", args["train_size"], args["test_size"])
    y_random = random_labels(len(data.train), args["classes"], seeds[0], ctx.device)
    ens = Ensemble.from_seeds(args["model"], seeds, ctx.device)
    cfg = TrainConfig(args["epochs"], args["batch_size"], args["lr"], args["weight_decay"], amp=args["amp"])

    def evaluate(t: Trainer) -> dict:
        tr = evaluate_classifier(t.ens, data.train.x, y_random)
        te = evaluate_classifier(t.ens, data.test.x, data.test.y)
        return {"train_loss": tr["loss"], "train_acc": tr["acc"], "test_loss": te["loss"], "test_acc": te["acc"]}

    trainer = Trainer(ens, cfg, seeds)
    trainer.run(data.train.x, y_random, evaluate=evaluate, checkpoint=ctx.checkpoint)
    h = trainer.history
    return {
        "seeds": seeds,
        "train_size": len(data.train),
        # how often a random label happens to be the true one (~1/classes): the floor of "fitting" them
        "agreement_with_true": (y_random == data.train.y).float().mean().item(),
        **{k: torch.stack(h[k])[:, 0] for k in METRICS},  # [epochs + 1]
        "diverged": bool(trainer.diverged[0]),
    }


METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def summarize(cfg: dict, results: dict) -> dict:
    r = results.get("mnist-mlp")
    if r is None:
        return {}
    return {
        "epochs": cfg["epochs"],
        **{f"final_{k}": r[k][-1].item() for k in METRICS},
        "train_size": r["train_size"],
        "initial_train_loss": r["train_loss"][0].item(),
        "initial_test_loss": r["test_loss"][0].item(),
        "random_label_agreement_with_true": r["agreement_with_true"],
        "diverged": r["diverged"],
    }


def metrics(cfg: dict, results: dict) -> list[dict]:
    rows = []
    for r in results.values():
        for k in METRICS:
            rows += [{"seed": r["seeds"][0], "epoch": e, "metric": k, "value": v} for e, v in enumerate(r[k].tolist())]
    return rows


def figures(cfg: dict, results: dict, fig_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = results["mnist-mlp"]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = range(len(r["train_loss"]))
    ax_l.plot(epochs, r["train_loss"], label="train (random labels)")
    ax_l.plot(epochs, r["test_loss"], label="test (true labels)")
    ax_a.plot(epochs, 100 * r["train_acc"], label="train (random labels)")
    ax_a.plot(epochs, 100 * r["test_acc"], label="test (true labels)")
    ax_a.axhline(100 / cfg["classes"], color="gray", ls=":", lw=1, label="chance (10%)")
    sub = f"mnist-mlp, {r['train_size']:,} training images, lr {cfg['lr']:g}, batch {cfg['batch_size']}"
    ax_l.set(xlabel="epoch", ylabel="cross-entropy loss", title=f"Loss\n{sub}")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 100), title=f"Accuracy\n{sub}")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return [save_fig(fig, fig_dir / "curves.png")]


def ours(summary: dict) -> dict:
    """This run's losses at initialisation and at the end, under REFERENCE's row labels."""
    return {f"{when} {split} loss": summary.get(f"{when}_{split}_loss") for when in ("initial", "final") for split in ("train", "test")}
