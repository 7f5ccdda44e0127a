"""6. random-labels: an MLP memorises MNIST with random labels (Zhang et al. 2017).

The training labels are replaced by i.i.d. uniform labels from a generator seeded with each
member's seed (every seed has its own labels and initialisation; the seeds train as one
ensemble); the test labels stay true. Train metrics are measured on the random labels (in a
separate evaluation pass), test metrics on the true ones, every epoch.

"Final" numbers are the mean over the last `final_window` fraction of the epochs (at least one),
not the last epoch alone: training on random labels at a large step size has late blow-ups
(train accuracy 100% at one epoch, 85% a few later). A seed whose train accuracy inside that
window falls more than INSTABILITY below its best so far is flagged unstable.
"""

from __future__ import annotations

import torch

import math

from ..engine import Ensemble, Trainer, TrainConfig, evaluate_classifier
from ..findings import Finding, finite_or_none, greater, within
from ._base import (
    ConfigError,
    Trial,
    blown_up,
    join_seed_parts,
    plot_median_iqr,
    pyplot,
    save_fig,
    seeds_for,
    trials_by_seed_parts,
)

NAME = "random-labels"
TITLE = "Memorising random labels (MNIST, mnist-mlp)"

# --- for the report and the progress display (see _base.py)
PART = "Generalization"
COST = 25  # its share of `run all` (quick, default executor, 2 idle cores; bench/study_time.py, 2026-12-06) in seconds
LOOK_FOR = (
    "whether train accuracy on the random labels climbs toward 100% and train loss falls well below "
    "log 10 ≈ 2.30, while test accuracy on the true labels stays at chance (10%) and test loss rises: "
    "memorisation without generalization (Zhang et al. 2017; the original's Fig 14). The 'final' numbers "
    "are each seed's mean over the last 10% of epochs, then the mean over seeds; a seed whose train "
    "accuracy falls late (a blow-up at a large step size) is flagged, not hidden. The quick profile "
    "trains 4,000 images at lr 1e-3 for 150 epochs; the original trained 60,000 at lr 1e-4 for 1,000 "
    "and ended at train loss ≈ 1.15, far from 100% train accuracy, so at its settings `memorises` "
    "can come out not shown while `train-loss-falls` is shown. Each claim is judged from the seeds' final numbers "
    "by a Student-t interval: with 3 seeds a mean must clear its line by about 2.5 standard deviations of the "
    "seeds' values to be shown (5 seeds at full: 1.24)."
)
CAPTIONS = {
    "curves.png": "Loss and accuracy against epoch, the median over seeds with the interquartile range as a band: "
    "train on the random labels, test on the true labels; chance (10%) dotted; the shaded final window is what the "
    "'final' numbers average; stars: the original's losses at its start and after its 1,000 epochs, at full "
    "settings (the original's Fig 14).",
}
DIFFERENCES = [
    (
        "Final numbers (experiment 6)",
        "dlscope: each seed's mean over the last 10% of epochs, 3 seeds (quick; 5 at full); the original: the last epoch "
        "of one run.",
        "Training on random labels at a large step size has late blow-ups (train accuracy 100% at one epoch, 85% "
        "seven epochs later): one epoch's value would report an accident of timing.",
    ),
]
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
    "seeds": 5,  # quick and smoke: 3
    "final_window": 0.1,  # "final" = the mean over the last 10% of the epochs
}
# --- what the settings mean (see _base.py): which measure work (the time estimate), which must be positive
WORK_SETTINGS = {"models": ("seeds",), "length": ("epochs",), "data": ("train_size",)}
POSITIVE_SETTINGS = ("seeds", "epochs", "batch_size", "lr")
NON_NEGATIVE_SETTINGS = ("train_size", "test_size")
PROFILES = {
    "smoke": {**_FULL, "epochs": 4, "train_size": 200, "test_size": 200, "seeds": 3},
    # 4,000 images and lr 1e-3 instead of 60,000 and 1e-4, 3 seeds: train accuracy on the random
    # labels climbs over the 150 epochs (one seed reached ~99%, with a late blow-up: hence the
    # mean over the last 15 epochs)
    "quick": {**_FULL, "epochs": 150, "lr": 1e-3, "train_size": 4000, "test_size": 2000, "seeds": 3},
    "full": _FULL,
}


def validate(settings: dict) -> None:
    if settings["model"] != "mnist-mlp":
        raise ConfigError("model: random-labels uses the MNIST model mnist-mlp")
    if not 0 < settings["train_size"] <= 60000 or not 0 < settings["test_size"] <= 10000:
        raise ConfigError("train_size must be in 1..60000 and test_size in 1..10000")
    if settings["classes"] != 10:
        raise ConfigError("classes: MNIST has 10")


def random_labels(n: int, classes: int, seed: int, device="cpu") -> torch.Tensor:
    """n i.i.d. uniform labels in 0..classes-1, from their own generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, (n,), generator=g).to(device)


def trials(settings: dict) -> list[Trial]:
    # the seeds' ensemble in two trials of consecutive seeds, so that two cores share it
    return trials_by_seed_parts(
        settings, train_random, "mnist-mlp", seeds_for(settings, settings["seeds"]), "mnist-mlp, random labels"
    )


def joined(results: dict) -> dict:
    """The trials' results as one: {"mnist-mlp": every finished seed}, or {} if none finished."""
    r = join_seed_parts(results, "mnist-mlp", shared=("train_size",))
    return {"mnist-mlp": r} if r else {}


def train_random(settings: dict, ctx) -> dict:
    seeds = settings["trial_seeds"]
    data = ctx.load_data("mnist", settings["train_size"], settings["test_size"])
    y_random = torch.stack([random_labels(len(data.train), settings["classes"], s, ctx.device) for s in seeds])  # [N, n]
    ens = Ensemble.from_seeds(settings["model"], seeds, ctx.device)
    train_config = TrainConfig.from_settings(settings)

    def evaluate(t: Trainer) -> dict:
        tr = evaluate_classifier(t.ens, data.train.x, y_random)
        te = evaluate_classifier(t.ens, data.test.x, data.test.y)
        return {"train_loss": tr["loss"], "train_acc": tr["acc"], "test_loss": te["loss"], "test_acc": te["acc"]}

    trainer = Trainer(ens, train_config, seeds)
    trainer.run(data.train.x, y_random, evaluate=evaluate, checkpoint=ctx.checkpoint)
    h = trainer.history
    return {
        "seeds": seeds,
        "train_size": len(data.train),
        # how often a random label happens to be the true one (~1/classes): the floor of "fitting" them
        "agreement_with_true": (y_random == data.train.y).float().mean(1).tolist(),
        **{k: torch.stack(h[k]) for k in METRICS},  # [epochs + 1, seeds]
        "diverged": [d or b for d, b in zip(trainer.diverged.tolist(), blown_up(trainer.ens))],
    }


METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
INSTABILITY = 0.05  # a fall in train accuracy (fraction) inside the final window that flags a seed


def window_epochs(settings: dict) -> int:
    """How many of the last epochs the "final" numbers average over."""
    return max(1, round(settings["final_window"] * settings["epochs"]))


def rows(settings: dict, results: dict) -> list[dict]:
    """One row per seed: the final numbers (means over the final window), the last epoch's for
    comparison, and the instability flag. A diverged seed's numbers are None (its accuracy would
    be that of NaN outputs, which argmax reads as class 0: about 10%, chance by accident)."""
    r = results.get("mnist-mlp")
    if r is None:
        return []
    w = window_epochs(settings)
    out = []
    for i, seed in enumerate(r["seeds"]):
        curve = {k: r[k][:, i] for k in METRICS}  # epoch 0 (initialisation) .. epochs
        acc = curve["train_acc"]
        best_before = torch.cummax(acc, 0).values
        drop = (best_before - acc)[-w:].max().item()
        if r["diverged"][i]:
            curve = {k: torch.cat([v[:1], torch.full_like(v[1:], float("nan"))]) for k, v in curve.items()}  # keep epoch 0
            acc, drop = curve["train_acc"], float("nan")
        row = {"seed": seed}
        row.update({f"final_{k}": finite_or_none(curve[k][-w:].mean().item()) for k in METRICS})
        row.update({f"last_epoch_{k}": finite_or_none(curve[k][-1].item()) for k in METRICS})
        row.update({f"initial_{k}": finite_or_none(curve[k][0].item()) for k in ("train_loss", "test_loss")})
        row["best_train_acc"] = finite_or_none(acc.max().item())
        row["largest_train_acc_drop_in_window"] = finite_or_none(drop)
        row["unstable"] = bool(drop > INSTABILITY)  # False for a diverged seed: that is flagged apart
        row["random_label_agreement_with_true"] = r["agreement_with_true"][i]
        row["diverged"] = bool(r["diverged"][i])
        out.append(row)
    return out


def claims(settings: dict, table: list[dict]) -> list[dict]:
    """Each seed's final numbers (its mean over the final window: one number per seed, epochs never
    resampled), judged over seeds: a mean beyond a line by findings.greater (Student-t interval,
    and from 6 seeds the exact sign-flip test too), "near chance" by findings.within (the t interval
    inside [0.07, 0.13]). With the quick profile's 3 seeds a mean is shown only if it clears its
    line by about 2.5 standard deviations of the seeds' values."""
    w = window_epochs(settings)
    final = f"mean over the last {w} of {settings['epochs']} epochs"
    unstable = [r["seed"] for r in table if r["unstable"]]
    flag = f"; unstable seed(s) {unstable} (train accuracy fell > {INSTABILITY:.0%} in the window)" if unstable else ""
    col = lambda k: [r[k] for r in table]  # noqa: E731

    def lost(stat) -> str:
        return f"{len(table) - stat.n} seed(s) diverged" if len(table) > stat.n else ""

    out = []
    stat = greater(col("final_train_acc"), margin=0.9)
    above = sum(v is not None and v > 0.9 for v in col("final_train_acc"))
    out.append(
        Finding.from_stat(
            stat,
            "memorises",
            "train accuracy on the random labels approaches 100% (above 90%)",
            "Zhang et al. 2017",
            f"mean over seeds of the train accuracy on the random labels ({final}); shown if its Student-t 95% interval lies "
            "above 0.9",
            (
                f"above 0.9 in {above} of {len(table)} seeds; best single epoch "
                f"{max((r['best_train_acc'] or 0) for r in table):.3f}"
                f"{flag}"
            )
            if table
            else "no seeds",
        ).as_dict()
    )
    stat = greater([None if v is None else math.log(settings["classes"]) - v for v in col("final_train_loss")], margin=0.5)
    out.append(
        Finding.from_stat(
            stat,
            "train-loss-falls",
            "train loss on the random labels falls well below chance, log 10 ≈ 2.30",
            "original",
            f"mean over seeds of log 10 − final train loss ({final}); shown if its Student-t 95% interval lies above 0.5 nats "
            "(the original: 2.30 → 1.15)",
            lost(stat),
        ).as_dict()
    )
    stat = within(col("final_test_acc"), 0.07, 0.13)
    out.append(
        Finding.from_stat(
            stat,
            "test-at-chance",
            "test accuracy (true labels) stays near chance, 10%",
            "Zhang et al. 2017",
            f"mean over seeds of the test accuracy ({final}); shown if its Student-t 95% interval lies inside [0.07, 0.13]",
            lost(stat),
        ).as_dict()
    )
    rises = [None if a is None or b is None else b - a for a, b in zip(col("initial_test_loss"), col("final_test_loss"))]
    stat = greater(rises)
    out.append(
        Finding.from_stat(
            stat,
            "test-loss-rises",
            "test loss rises above its value at initialisation",
            "original",
            f"mean over seeds of final test loss ({final}) − test loss at initialisation (the original: 2.30 → 5.0); "
            "paired by seed",
            lost(stat),
        ).as_dict()
    )
    return out


def summarize(settings: dict, results: dict) -> dict:
    results = joined(results)
    table = rows(settings, results)
    if not table:
        return {}

    def mean(k):
        ok = [r[k] for r in table if r[k] is not None]
        return sum(ok) / len(ok) if ok else None

    return {
        "epochs": settings["epochs"],
        "seeds": settings["seeds"],
        "final_window_epochs": window_epochs(settings),
        "final": f"each seed's mean over the last {window_epochs(settings)} epochs; the summary's final_* are the means over "
        "seeds",
        **{f"final_{k}": mean(f"final_{k}") for k in METRICS},
        "initial_train_loss": mean("initial_train_loss"),
        "initial_test_loss": mean("initial_test_loss"),
        "train_size": results["mnist-mlp"]["train_size"],
        "unstable_seeds": [r["seed"] for r in table if r["unstable"]],
        "diverged": any(r["diverged"] for r in table),
        "results": table,
        "findings": claims(settings, table),
    }


def metrics(settings: dict, results: dict) -> list[dict]:
    rows_ = []
    for r in joined(results).values():
        for i, seed in enumerate(r["seeds"]):
            for k in METRICS:
                rows_ += [{"seed": seed, "epoch": e, "metric": k, "value": v} for e, v in enumerate(r[k][:, i].tolist())]
    return rows_


COLORS = {"train": "tab:blue", "test": "tab:orange"}


def figures(settings: dict, results: dict, fig_dir) -> list[str]:
    plt = pyplot()

    results = joined(results)
    r = results["mnist-mlp"]
    table = rows(settings, results)
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(12, 4.6))
    epochs = list(range(r["train_loss"].shape[0]))
    last = epochs[-1]
    for split, what in (("train", "train (random labels)"), ("test", "test (true labels)")):
        plot_median_iqr(ax_l, epochs, r[f"{split}_loss"].T.tolist(), what, COLORS[split])
        plot_median_iqr(ax_a, epochs, (100 * r[f"{split}_acc"]).T.tolist(), what, COLORS[split])
    for split in ("train", "test"):  # the original's losses at the start and after its 1,000 epochs
        start, end = REFERENCE["rows"][f"initial {split} loss"], REFERENCE["rows"][f"final {split} loss"]
        ax_l.plot(
            [0, last],
            [start, end],
            "*",
            color=COLORS[split],
            mec="k",
            ms=10,
            label=f"original {split} loss (full settings: epochs 0 and 1,000)",
        )
    ax_a.axhline(100 / settings["classes"], color="gray", ls=":", lw=1, label="chance (10%)")
    w = window_epochs(settings)
    for ax in (ax_l, ax_a):
        ax.axvspan(last - w + 0.5, last + 0.5, color="gray", alpha=0.12, lw=0, label=f"final window ({w} epochs, averaged)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    unstable = [t["seed"] for t in table if t["unstable"]]
    sub = (
        f"mnist-mlp, {r['train_size']:,} training images, lr {settings['lr']:g}, batch {settings['batch_size']}; bands: IQR "
        "over seeds" + (f"; unstable late: seed {', '.join(map(str, unstable))}" if unstable else "")
    )
    ax_l.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 100), title="Accuracy")
    fig.suptitle(sub, fontsize=10)  # once for both panels: two copies ran into each other
    return [save_fig(fig, fig_dir / "curves.png")]


def ours(summary: dict) -> dict:
    """This run's losses at initialisation and at the end (final: each seed's mean over the final
    window, then the mean over seeds), under REFERENCE's row labels."""
    return {
        f"{when} {split} loss": summary.get(f"{when}_{split}_loss")
        for when in ("initial", "final")
        for split in ("train", "test")
    }
