"""9. sensitivity: input sensitivity of cnn-1 vs batch size and vs learning rate (Novak et al. 2018).

Sensitivity = the Frobenius norm of the Jacobian of the class probabilities with respect to the
input image, averaged over a fixed, class-balanced set of test images (analysis.sensitivity).
Different batch sizes take different steps, so each is its own trial; the learning rates share
shapes and steps and train as one ensemble with a learning rate per member. Every training
starts from the same initialisation (the run's seed), so only the swept setting differs.
A diverged member (non-finite loss) is recorded as diverged, its numbers as null.
"""

from __future__ import annotations

import math


from .. import models
from ..analysis.sensitivity import ensemble_sensitivity
from ..data import balanced_subset
from .base import ConfigError, Trial, save_fig, seeds_for
from .cifar import COMMON, METRICS, check_model, check_sizes, diverged, history, train_cifar

NAME = "sensitivity"
TITLE = "Flatness 2: input sensitivity vs batch size and learning rate"

# --- for the report and the progress display (see base.py)
COST = 73  # seconds of the quick profile on the reference CPU; only the ratios between experiments matter
LOOK_FOR = ("sensitivity rises as generalization worsens (Novak et al. 2018): with larger "
            "batches and with extreme learning rates.")
CAPTIONS = {
    "loss_vs_batch.png": "Train and test loss (left axis) and input sensitivity (right axis) against batch size "
    "at a fixed learning rate (the original's Figs 17 and 18).",
    "acc_vs_batch.png": "Train and test accuracy (left axis) and input sensitivity (right axis) against batch size "
    "at a fixed learning rate (the original's Figs 17 and 18).",
    "loss_vs_lr.png": "Train and test loss (left axis) and input sensitivity (right axis) against learning rate "
    "at a fixed batch size (the original's Figs 20 and 21).",
    "acc_vs_lr.png": "Train and test accuracy (left axis) and input sensitivity (right axis) against learning rate "
    "at a fixed batch size (the original's Figs 20 and 21).",
}
REFERENCE = {  # the original study's test accuracy (SPEC), by batch size (lr 4e-4) and by learning rate (batch 512)
    "what": "test accuracy per batch size (lr 4e-4) and per learning rate (batch 512)",
    "original": "after 25 epochs",
    "kind": "acc",
    "rows": {
        "batch 16": 0.619, "batch 64": 0.577, "batch 256": 0.575, "batch 1024": 0.526, "batch 4096": 0.464,
        "lr 0.1": 0.156, "lr 0.01": 0.341, "lr 0.001": 0.599, "lr 0.0001": 0.473, "lr 1e-05": 0.354,
    },
}
DIFFERENCES = [
    ("Sensitivity (experiments 8 and 9)",
     "dlscope: the Frobenius norm of the Jacobian of the softmax output (class probabilities) with "
     "respect to the input image, per test image, averaged over test images. The original: a norm "
     "of the gradient of the loss with respect to the parameters, on one mini-batch.",
     "The Jacobian norm is Novak et al.'s (2018) measure, the one shown to track the generalization "
     "gap: it describes the function the network computes at test points, independent of how it is "
     "parameterised and of which mini-batch happens to be drawn. A parameter-gradient norm on one "
     "batch measures the slope of the training loss in weight space, which is a different quantity "
     "and noisy. Numbers of the two do not compare."),
]

_FULL = {
    "model": "cnn-1",
    "epochs": 25,
    "batch_sizes": [16, 64, 256, 1024, 4096],
    "batch_sweep_lr": 4e-4,
    "lrs": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5],
    "lr_sweep_batch_size": 512,
    **{k: v for k, v in COMMON.items() if k != "lr"},  # the lr is what the pairs/sweeps set
    "sensitivity_samples": 10000,  # test images the sensitivity averages over (all of them in full)
    "eval_every": 1,
}
PROFILES = {
    "smoke": {**_FULL, "epochs": 1, "batch_sizes": [64, 512], "lrs": [1e-1, 1e-3], "lr_sweep_batch_size": 128,
              "train_size": 256, "test_size": 128, "sensitivity_samples": 16},
    # 4,096 training images, so batch 4096 is exactly one full-batch step per epoch (in full it is
    # 12 steps of 50,000); 16 epochs, lr step at 12 (as 10 of 25 would be 6 of 16, too early for
    # the large batches); sensitivity over 500 test images; train/test curves every 4 epochs.
    "quick": {**_FULL, "epochs": 16, "lr_step": 12, "train_size": 4096, "test_size": 1000,
              "sensitivity_samples": 500, "eval_every": 4},
    "full": _FULL,
}


def validate(cfg: dict) -> None:
    check_model(cfg["model"], "model")
    check_sizes(cfg)
    if not 0 < cfg["sensitivity_samples"] <= cfg["test_size"]:
        raise ConfigError("sensitivity_samples must be in 1..test_size")
    if len(set(cfg["batch_sizes"])) != len(cfg["batch_sizes"]):
        raise ConfigError("batch_sizes: values must differ")


def trials(cfg: dict) -> list[Trial]:
    out = [Trial(key=f"batch-{b}", fn=train_sweep, args={**cfg, "sweep": "batch", "batch_size": b, "lr": [cfg["batch_sweep_lr"]]},
                 label=f"batch {b}") for b in cfg["batch_sizes"]]
    out.append(Trial(key="lr", fn=train_sweep, args={**cfg, "sweep": "lr", "batch_size": cfg["lr_sweep_batch_size"], "lr": cfg["lrs"]},
                     label=f"lrs {', '.join(f'{v:g}' for v in cfg['lrs'])}"))
    return out


def train_sweep(args: dict, ctx) -> dict:
    """One batch size (one member) or all learning rates (one member each), then sensitivity."""
    lrs = args["lr"]
    seeds = seeds_for(args, 1) * len(lrs)  # one initialisation for every member
    trainer, data = train_cifar(args, ctx, args["model"], seeds, lr=lrs, batch_size=args["batch_size"])
    sens_x = data.test.x[balanced_subset(data.test.y, args["sensitivity_samples"]).to(data.test.x.device)]
    sens = ensemble_sensitivity(trainer.ens, sens_x, models.outputs_probabilities(args["model"]))
    div = [d or not math.isfinite(s) for d, s in zip(diverged(trainer), sens.tolist())]
    return {
        "sweep": args["sweep"],
        "batch_size": args["batch_size"],
        # the batch the trainer really used: a batch larger than the training set is the whole set
        "effective_batch_size": min(args["batch_size"], len(data.train)),
        "lrs": lrs,
        "seed": seeds[0],
        **history(trainer),  # [E] and [E, N]
        "sensitivity": sens,  # [N]
        "sensitivity_samples": len(sens_x),
        "diverged": div,
    }


def rows(cfg: dict, results: dict) -> list[dict]:
    """One row per training, batch sweep then lr sweep; a diverged one's numbers are None."""
    out = []
    keys = [f"batch-{b}" for b in cfg["batch_sizes"]] + ["lr"]
    for key in keys:
        r = results.get(key)
        if r is None:
            continue
        for i, lr in enumerate(r["lrs"]):
            row = {"sweep": r["sweep"], "batch_size": r["batch_size"], "lr": lr}
            vals = {k: r[k][-1, i].item() for k in METRICS} | {"sensitivity": r["sensitivity"][i].item()}
            row.update({k: (None if r["diverged"][i] or not math.isfinite(v) else v) for k, v in vals.items()})
            row["diverged"] = bool(r["diverged"][i])
            if r["effective_batch_size"] != r["batch_size"]:
                row["effective_batch_size"] = r["effective_batch_size"]
            ref = REFERENCE["rows"].get(reference_label(r["sweep"], r["batch_size"], lr))
            if ref is not None:
                row["original_test_acc"] = ref
            out.append(row)
    return out


def summarize(cfg: dict, results: dict) -> dict:
    return {
        "epochs": cfg["epochs"],
        "train_size": cfg["train_size"],
        "sensitivity_samples": cfg["sensitivity_samples"],
        "sensitivity_definition": "mean over the test images of the Frobenius norm of d(class probabilities)/d(input image)",
        "results": rows(cfg, results),
    }


def metrics(cfg: dict, results: dict) -> list[dict]:
    out = []
    for r in results.values():
        for i, lr in enumerate(r["lrs"]):
            base = {"sweep": r["sweep"], "batch_size": r["batch_size"], "lr": lr, "seed": r["seed"]}
            for j, e in enumerate(r["epoch"].tolist()):
                out += [{**base, "epoch": e, "metric": k, "value": r[k][j, i].item()} for k in METRICS]
            out.append({**base, "epoch": cfg["epochs"], "metric": "sensitivity", "value": r["sensitivity"][i].item()})
    return out


def figures(cfg: dict, results: dict, fig_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    table = rows(cfg, results)
    paths = []
    for sweep, xkey, xlabel in (("batch", "batch_size", "batch size"), ("lr", "lr", "learning rate")):
        pts = sorted((r for r in table if r["sweep"] == sweep), key=lambda r: r[xkey])
        if not pts:
            continue
        fixed = f"lr {cfg['batch_sweep_lr']:g}" if sweep == "batch" else f"batch {cfg['lr_sweep_batch_size']}"
        epochs = f"{cfg['epochs']} epoch{'s' if cfg['epochs'] != 1 else ''}"
        sub = f"{cfg['model']}, {epochs}, {fixed}, {cfg['train_size']:,} training images"
        for what in ("loss", "accuracy"):
            fig, ax = plt.subplots(figsize=(6.5, 4.2))
            xs = [r[xkey] for r in pts]
            scale = 100 if what == "accuracy" else 1
            key = "acc" if what == "accuracy" else "loss"
            for split, style in (("train", "o--"), ("test", "s-")):
                ys = [scale * r[f"{split}_{key}"] if r[f"{split}_{key}"] is not None else float("nan") for r in pts]
                ax.plot(xs, ys, style, label=f"{split} {what}")
            ax.set(xscale="log", xlabel=f"{xlabel} (log scale)", ylabel=f"{what} (%)" if what == "accuracy" else "cross-entropy loss")
            ax.set_xticks(xs, [f"{v:g}" for v in xs])  # the swept values themselves
            ax.xaxis.set_minor_locator(NullLocator())
            ax.grid(alpha=0.3, which="both")
            twin = ax.twinx()
            sens = [r["sensitivity"] if r["sensitivity"] is not None else float("nan") for r in pts]
            twin.plot(xs, sens, "d-", color="tab:green", label="sensitivity")
            twin.set_ylabel(f"sensitivity: mean ‖∂p/∂x‖_F\n({cfg['sensitivity_samples']} test images)", color="tab:green")
            twin.tick_params(axis="y", colors="tab:green")
            for r in pts:
                if r["diverged"]:
                    ax.annotate("diverged", (r[xkey], 0.5), xycoords=("data", "axes fraction"), ha="center", color="red", fontsize=8)
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = twin.get_legend_handles_labels()
            # below the axes: twin-axis legends inside the frame end up on some line
            ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
            ax.set_title(f"{what.capitalize()} and sensitivity vs {xlabel}\n{sub}", fontsize=10)
            paths.append(save_fig(fig, fig_dir / f"{key}_vs_{sweep}.png"))
    return paths


def reference_label(sweep: str, batch_size, lr) -> str:
    """The REFERENCE row label of one training of a sweep."""
    return f"batch {int(batch_size)}" if sweep == "batch" else f"lr {float(lr):g}"


def ours(summary: dict) -> dict:
    """This run's test accuracy under REFERENCE's row labels: the mean over seeds per batch size / lr."""
    acc: dict = {}
    for r in summary.get("results") or []:
        if isinstance(r, dict) and r.get("sweep") in ("batch", "lr") and isinstance(r.get("batch_size"), (int, float)) \
                and isinstance(r.get("lr"), (int, float)):
            acc.setdefault(reference_label(r["sweep"], r["batch_size"], r["lr"]), []).append(r.get("test_acc"))
    return {k: (sum(v) / len(v) if all(isinstance(x, (int, float)) for x in v) else None) for k, v in acc.items()}
