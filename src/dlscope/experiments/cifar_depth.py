"""2. cifar-depth: deep vs shallow CNNs on CIFAR-10 (cnn-1, cnn-2, cnn-7).

The three architectures differ, so each is its own trial (seeds of one model share an ensemble).
Train metrics come from a separate evaluation pass over the un-augmented training set.
"""

from __future__ import annotations


from .base import Trial, finished_models, save_fig, seeds_for, trial_per_model
from .cifar import COMMON, METRICS, diverged, history, train_cifar, validate_models_and_sizes

NAME = "cifar-depth"
TITLE = "Deep vs shallow CNNs on CIFAR-10"

_FULL = {
    "models": ["cnn-1", "cnn-2", "cnn-7"],
    "epochs": 100,
    "batch_size": 64,
    **COMMON,
    "seeds": 1,
}
PROFILES = {
    "smoke": {**_FULL, "epochs": 2, "lr_step": 1, "train_size": 600, "test_size": 300},
    "quick": {**_FULL, "epochs": 8, "lr_step": 6, "lr": 1e-3, "train_size": 8000, "test_size": 2000},
    "full": _FULL,
}

# The original study's numbers at epoch 100 (SPEC): test loss, test accuracy.
REFERENCE = {"cnn-1": (1.8815, 0.5873), "cnn-2": (0.8913, 0.6870), "cnn-7": (0.6874, 0.7681)}


validate = validate_models_and_sizes


def trials(cfg: dict) -> list[Trial]:
    return trial_per_model(cfg, train_model)


def train_model(args: dict, ctx) -> dict:
    seeds = seeds_for(args, args["seeds"])
    trainer, _ = train_cifar(args, ctx, args["model"], seeds)
    # every metric [epochs + 1, N]: evaluated at initialisation and after every epoch
    return {"model": args["model"], "params": trainer.ens.n_params(), "seeds": seeds, **history(trainer), "diverged": diverged(trainer)}


def summarize(cfg: dict, results: dict) -> dict:
    rows = []
    for m, r in finished_models(cfg, results):
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
