"""3. trajectory: the optimization path of cnn-21 in parameter space, seen through a joint PCA.

All runs (different initialisations) train together as one Ensemble. The parameter vector of
every run, whole model and one layer, is taken at initialisation and after every epoch; one PCA
(centred, not scaled) is fitted on all runs' points together, so the runs share the axes.
Test loss and accuracy are measured every epoch (the figure's labels); the training loss recorded
is the epoch's mean mini-batch loss (no separate pass over the training set, to save time).
"""

from __future__ import annotations

import torch

from .. import models
from ..analysis.pca import fit_pca, select_names
from ..engine import Ensemble, Trainer, TrainConfig, evaluate_classifier
from .base import ConfigError, Trial, save_fig, seeds_for
from .cifar import COMMON, check_model, check_sizes

NAME = "trajectory"
TITLE = "The optimization path in parameter space (PCA)"

# --- for the report and the progress display (see base.py)
PART = "Optimization"
COST = 32  # seconds of the quick profile on the reference CPU; only the ratios between experiments matter
LOOK_FOR = ("the paths in the plane of the first two principal components, which hold most of the "
            "paths' variance (Li et al. 2018); runs from different initialisations travel to different places.")
CAPTIONS = {
    "trajectory_whole.png": "The whole model's parameters of every run, at initialisation and after each epoch, "
    "projected on the first two principal components of one joint PCA, with test accuracies along the paths "
    "(the original's Fig 12).",
    "trajectory_layer.png": "The same for one layer's parameters (by default the first convolution's weight) "
    "(the original's Fig 11).",
}
REFERENCE = {
    "what": "final test accuracy over the runs (lowest – highest)",
    "original": "after 50 epochs",
    "kind": "acc",
    "rows": {"final test accuracy, range over runs": (0.39, 0.43)},
}

_FULL = {
    "model": "cnn-21",
    "runs": 8,
    "layer": "0.weight",  # the first conv layer's weight
    "epochs": 50,
    "batch_size": 1000,
    **COMMON,
    "label_every": 3,  # annotate every third epoch with its test accuracy
}
PROFILES = {
    "smoke": {**_FULL, "runs": 3, "epochs": 4, "batch_size": 100, "lr": 2e-3, "lr_step": 3, "train_size": 300, "test_size": 200},
    "quick": {**_FULL, "epochs": 12, "batch_size": 200, "lr": 2e-3, "lr_step": 8, "train_size": 4000, "test_size": 1000},
    "full": _FULL,
}


def validate(cfg: dict) -> None:
    check_model(cfg["model"], "model")
    torch.manual_seed(0)
    names = [k for k, _ in models.build(cfg["model"]).named_parameters()]
    try:
        select_names(names, cfg["layer"])
    except KeyError:
        raise ConfigError(f"layer: {cfg['layer']!r} is not a parameter or module of {cfg['model']}; have: {', '.join(names)}") from None
    if cfg["label_every"] < 1:
        raise ConfigError("label_every: must be at least 1")
    check_sizes(cfg)


def trials(cfg: dict) -> list[Trial]:
    return [Trial(key="runs", fn=train_runs, args=dict(cfg), label=f"{cfg['runs']} x {cfg['model']}")]


def train_runs(args: dict, ctx) -> dict:
    seeds = seeds_for(args, args["runs"])
    data = ctx.load_data("cifar10", args["train_size"], args["test_size"])
    ens = Ensemble.from_seeds(args["model"], seeds, ctx.device)
    layer = select_names(list(ens.params), args["layer"])
    init_whole, init_layer = ens.flat().cpu(), ens.flat(layer).cpu()
    cfg = TrainConfig(args["epochs"], args["batch_size"], args["lr"], args["weight_decay"], args["lr_step"],
                      args["lr_gamma"], args["augment"], amp=args["amp"])
    trainer = Trainer(ens, cfg, seeds)

    def evaluate(t: Trainer) -> dict:
        # only the test set: the labels on the figure; the train loss is the epoch's mini-batch mean
        test = evaluate_classifier(t.ens, data.test.x, data.test.y)
        return {"test_loss": test["loss"], "test_acc": test["acc"]}

    def snap(t: Trainer) -> None:
        # kept in the trainer's history, so a resumed training still has the earlier points
        t.history.setdefault("whole", []).append(t.ens.flat().cpu())
        t.history.setdefault("layer", []).append(t.ens.flat(layer).cpu())

    trainer.run(data.train.x, data.train.y, evaluate=evaluate, checkpoint=ctx.checkpoint, on_epoch=snap)
    h = trainer.history
    return {
        "seeds": seeds,
        "layer_params": layer,
        "whole": torch.stack([init_whole] + h["whole"]),  # [epochs + 1, runs, P]
        "layer": torch.stack([init_layer] + h["layer"]),
        "test_loss": torch.stack(h["test_loss"]),  # [epochs + 1, runs]
        "test_acc": torch.stack(h["test_acc"]),
        "batch_loss": torch.stack(h["batch_loss"]),  # [epochs, runs]: mean mini-batch loss of each epoch
        "diverged": trainer.diverged.tolist(),
    }


# --------------------------------------------------------------------------- outputs


def projections(r: dict, which: str):
    """Joint PCA of all runs' points: (pca, coordinates [epochs + 1, runs, 2])."""
    pts = r[which].double()
    pca = fit_pca(pts.reshape(-1, pts.shape[-1]), k=2)
    return pca, pca.transform(pts)


def summarize(cfg: dict, results: dict) -> dict:
    r = results.get("runs")
    if r is None:
        return {}
    out = {"layer": cfg["layer"], "runs": len(r["seeds"]), "seeds": r["seeds"]}
    for which in ("whole", "layer"):
        pca, _ = projections(r, which)
        out[f"explained_variance_{which}"] = pca.explained_variance_ratio.tolist()
        out[f"params_{which}"] = r[which].shape[-1]
    out["final_test_acc"] = r["test_acc"][-1].tolist()
    out["final_test_loss"] = r["test_loss"][-1].tolist()
    out["final_batch_loss"] = r["batch_loss"][-1].tolist()  # mean mini-batch training loss of the last epoch
    out["diverged"] = r["diverged"]
    return out


def metrics(cfg: dict, results: dict) -> list[dict]:
    rows = []
    r = results.get("runs")
    if r is None:
        return rows
    coords = {w: projections(r, w)[1] for w in ("whole", "layer")}
    for i, seed in enumerate(r["seeds"]):
        for e in range(r["test_acc"].shape[0]):
            for k in ("test_loss", "test_acc"):
                rows.append({"run": i, "seed": seed, "epoch": e, "metric": k, "value": float(r[k][e, i])})
            if e > 0:
                rows.append({"run": i, "seed": seed, "epoch": e, "metric": "batch_loss", "value": float(r["batch_loss"][e - 1, i])})
            for w, c in coords.items():
                rows.append({"run": i, "seed": seed, "epoch": e, "metric": f"pc1_{w}", "value": float(c[e, i, 0])})
                rows.append({"run": i, "seed": seed, "epoch": e, "metric": f"pc2_{w}", "value": float(c[e, i, 1])})
    return rows


def figures(cfg: dict, results: dict, fig_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = results.get("runs")
    if r is None:
        return []
    colors = plt.get_cmap("tab10").colors
    paths = []
    for which, what in (("whole", "whole model"), ("layer", f"layer {cfg['layer']}")):
        pca, xy = projections(r, which)
        ratio = pca.explained_variance_ratio.tolist() + [0.0]
        epochs = xy.shape[0] - 1
        fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(14, 6.2), layout="constrained")
        # (a) where the runs are; (b) the same axes, each run moved to start at 0, so that paths
        # short next to the distances between initialisations can be seen
        for ax, shift in ((ax_a, False), (ax_b, True)):
            for i, seed in enumerate(r["seeds"]):
                c = colors[i % len(colors)]
                path = xy[:, i] - (xy[0, i] if shift else 0)
                ax.plot(path[:, 0], path[:, 1], "-o", color=c, ms=3, lw=1,
                        label=None if shift else f"run {i + 1} (seed {seed}): {100 * r['test_acc'][-1, i]:.1f}%")
                ax.plot(path[0, 0], path[0, 1], "s", color=c, ms=7, mec="k", mew=0.6)  # initialisation
                ax.plot(path[-1, 0], path[-1, 1], "*", color=c, ms=12, mec="k", mew=0.6)  # end
                for k, e in enumerate(range(cfg["label_every"], epochs + 1, cfg["label_every"])):
                    # alternate above / below: labels of a slowing path would otherwise overlap
                    ax.annotate(f"{100 * r['test_acc'][e, i]:.0f}", path[e], textcoords="offset points",
                                xytext=(5, 4) if k % 2 == 0 else (5, -11), fontsize=7, color=c, fontweight="bold")
            ax.set(xlabel=f"PC1 ({100 * ratio[0]:.1f}% of variance)" + (", from the run's start" if shift else ""),
                   ylabel=f"PC2 ({100 * ratio[1]:.1f}% of variance)" + (", from the run's start" if shift else ""))
            ax.grid(alpha=0.3)
        ax_a.set_title("(a) positions in the joint PCA plane", fontsize=10)
        ax_b.set_title("(b) the same paths, each shifted to start at (0, 0)", fontsize=10)
        fig.suptitle(f"{cfg['model']}, {what} ({r[which].shape[-1]:,} parameters): {len(r['seeds'])} runs, {epochs} epochs, "
                     f"one PCA on all runs' points\nsquare: initialisation, star: end; numbers: test accuracy (%) "
                     f"every {cfg['label_every']} epochs", fontsize=11)
        fig.legend(loc="outside right center", fontsize=8, title="final test accuracy", title_fontsize=8)
        paths.append(save_fig(fig, fig_dir / f"trajectory_{which}.png"))
    return paths


def ours(summary: dict) -> dict:
    """This run's final test accuracies under REFERENCE's row label: their range over the runs."""
    accs = [a for a in summary.get("final_test_acc") or [] if isinstance(a, (int, float))]
    return {"final test accuracy, range over runs": (min(accs), max(accs))} if accs else {}
