"""7. param-count: number of parameters vs generalization, cnn-21 ... cnn-31 on CIFAR-10.

The eleven architectures differ, so each is its own trial.
"""

from __future__ import annotations


from .. import models
from .base import Trial, finished_models, save_fig, seeds_for, trial_per_model
from .cifar import COMMON, METRICS, diverged, history, train_cifar, validate_models_and_sizes

NAME = "param-count"
TITLE = "Number of parameters vs generalization (cnn-21 ... cnn-31)"

# --- for the report and the progress display (see base.py)
COST = 96  # seconds of the quick profile on the reference CPU; only the ratios between experiments matter
LOOK_FOR = "test accuracy rises with the number of parameters."
CAPTIONS = {
    "params.png": "Train and test loss and accuracy against the number of parameters (log scale), one point per "
    "model cnn-21 … cnn-31 (the original's Figs 15 and 16).",
}
REFERENCE = {  # the original's test accuracy after 5 epochs (SPEC): 11k parameters (cnn-21), 425k (cnn-31)
    "what": "test accuracy after the last epoch, smallest and largest model",
    "original": "after 5 epochs",
    "kind": "acc",
    "rows": {"cnn-21 test accuracy": 0.395, "cnn-31 test accuracy": 0.545},
}

_FULL = {
    "models": [f"cnn-{k}" for k in models.CNN_FAMILY],
    "epochs": 5,
    "batch_size": 512,
    **COMMON,
    "weight_decay": 0.0,  # SPEC: no weight decay here
    "lr_step": 0,  # 0 = constant lr; SPEC's StepLR (step 10) would not act within 5 epochs anyway
    "eval_every": 1,  # epochs between evaluation passes (the last epoch is always evaluated)
}
PROFILES = {
    "smoke": {**_FULL, "models": ["cnn-21", "cnn-25", "cnn-30"], "epochs": 1, "train_size": 256, "test_size": 128},
    # 5 epochs over 6,000 images at batch 512 would be 60 steps, too few to tell the models
    # apart; batch 128 and lr 1e-3 give 235 steps. Train/test evaluated after the last epoch only.
    "quick": {**_FULL, "epochs": 5, "batch_size": 128, "lr": 1e-3, "train_size": 6000, "test_size": 2000, "eval_every": 5},
    "full": _FULL,
}


validate = validate_models_and_sizes


# --------------------------------------------------------------------------- trials and outputs


def trials(cfg: dict) -> list[Trial]:
    return trial_per_model(cfg, train_model)


def train_model(args: dict, ctx) -> dict:
    seeds = seeds_for(args, 1)
    trainer, _ = train_cifar(args, ctx, args["model"], seeds)
    return {"model": args["model"], "params": trainer.ens.n_params(), "seeds": seeds,
            **history(trainer), "diverged": diverged(trainer)}


def summarize(cfg: dict, results: dict) -> dict:
    rows = []
    for m, r in finished_models(cfg, results):
        row = {"model": m, "params": r["params"], **{k: r[k][-1, 0].item() for k in METRICS}, "diverged": r["diverged"][0]}
        if f"{m} test accuracy" in REFERENCE["rows"]:
            row["original_test_acc"] = REFERENCE["rows"][f"{m} test accuracy"]
        rows.append(row)
    return {"epochs": cfg["epochs"], "train_size": cfg["train_size"], "test_size": cfg["test_size"], "results": rows}


def metrics(cfg: dict, results: dict) -> list[dict]:
    rows = []
    for m, r in results.items():
        base = {"model": m, "params": r["params"], "seed": r["seeds"][0]}
        for i, e in enumerate(r["epoch"].tolist()):
            rows += [{**base, "epoch": e, "metric": k, "value": r[k][i, 0].item()} for k in METRICS]
        rows += [{**base, "epoch": e + 1, "metric": "batch_loss", "value": v} for e, v in enumerate(r["batch_loss"][:, 0].tolist())]
    return rows


def figures(cfg: dict, results: dict, fig_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    rows = sorted(summarize(cfg, results)["results"], key=lambda r: r["params"])
    params = [r["params"] for r in rows]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4.2))
    for split, style in (("train", "o--"), ("test", "s-")):
        ax_l.plot(params, [r[f"{split}_loss"] for r in rows], style, label=split)
        ax_a.plot(params, [100 * r[f"{split}_acc"] for r in rows], style, label=split)
    sub = f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, {cfg['train_size']:,} training images"
    ax_l.set(xscale="log", xlabel="parameters (log scale)", ylabel="cross-entropy loss", title=f"Loss vs parameters\n{sub}")
    ax_a.set(xscale="log", xlabel="parameters (log scale)", ylabel="accuracy (%)", title=f"Accuracy vs parameters\n{sub}")
    for ax in (ax_l, ax_a):  # name each point by its model number, on a top axis (after the log scale is set, which resets it)
        top = ax.secondary_xaxis("top")
        top.xaxis.set_major_locator(FixedLocator(params))
        top.xaxis.set_major_formatter(FixedFormatter([r["model"].removeprefix("cnn-") for r in rows]))
        top.xaxis.set_minor_locator(NullLocator())
        top.tick_params(labelsize=7, labelrotation=90)
        top.set_xlabel("model cnn-N", fontsize=8)
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return [save_fig(fig, fig_dir / "params.png")]


def ours(summary: dict) -> dict:
    """This run's test accuracy under REFERENCE's row labels: the mean over seeds per model."""
    rows = [r for r in summary.get("results") or [] if isinstance(r, dict)]
    out = {}
    for m in dict.fromkeys(r.get("model") for r in rows):
        vals = [r["test_acc"] for r in rows if r.get("model") == m and isinstance(r.get("test_acc"), (int, float))]
        out[f"{m} test accuracy"] = sum(vals) / len(vals) if vals else None
    return out
