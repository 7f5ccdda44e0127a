"""2. cifar-depth: deep vs shallow CNNs on CIFAR-10 (cnn-1, cnn-2, cnn-7).

The three architectures differ, so each is its own trial (seeds of one model share an ensemble).
Train metrics come from a separate evaluation pass over the un-augmented training set.
"""

from __future__ import annotations


from .base import Trial, finished_models, save_fig, seeds_for, trial_per_model
from .cifar import COMMON, METRICS, diverged, history, train_cifar, validate_models_and_sizes

NAME = "cifar-depth"
TITLE = "Deep vs shallow CNNs on CIFAR-10"

# --- for the report and the progress display (see base.py)
COST = 45  # seconds of the quick profile on the reference CPU; only the ratios between experiments matter
LOOK_FOR = "the deeper CNNs (cnn-2, cnn-7) end ahead of the one-layer cnn-1."
CAPTIONS = {
    "curves.png": "Train (dashed) and test (solid) loss and accuracy against epoch for each CNN "
    "(the original's Figs 7 and 8).",
    "table.png": "The final train and test loss and accuracy of each CNN, as a table (the original's table of final values).",
}
REFERENCE = {  # the original study's numbers at epoch 100 (SPEC)
    "what": "test loss and accuracy after the last epoch",
    "original": "epoch 100 (the original write-up's table says 1.924 / 54.36%, 0.966 / 65.85%, "
    "0.9532 / 73.57% for cnn-1 / cnn-2 / cnn-7)",
    "kind": None,  # per row: accuracy rows as accuracies, the others as losses
    "rows": {
        "cnn-1 test loss": 1.8815, "cnn-1 test accuracy": 0.5873, "cnn-2 test loss": 0.8913,
        "cnn-2 test accuracy": 0.6870, "cnn-7 test loss": 0.6874, "cnn-7 test accuracy": 0.7681,
    },
}
DIFFERENCES = [
    ("cnn-1's Softmax fed into cross-entropy (experiments 2, 8, 9)",
     "cnn-1 ends in Softmax, and cross-entropy applies log-softmax again on those probabilities. The "
     "loss cannot fall below log(e + 9) − 1 ≈ 1.461 and its gradients are small, so cnn-1 learns slowly "
     "and its losses are not comparable to the other models'.",
     "Kept so results compare; it explains most of cnn-1's high loss in the original too."),
    ("cnn-7's missing activation (experiment 2)",
     "cnn-7 has no activation between Linear(4096, 100) and Linear(100, 10): together they compute one "
     "linear map from 4096 to 10 values, so their 410k parameters express nothing that a single "
     "Linear(4096, 10) (41k parameters) could not; they change only how training proceeds.",
     "Kept so results compare."),
]

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
        if f"{m} test loss" in REFERENCE["rows"]:
            row["original_test_loss"], row["original_test_acc"] = (REFERENCE["rows"][f"{m} test {k}"] for k in ("loss", "accuracy"))
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


def ours(summary: dict) -> dict:
    """This run's test loss and accuracy under REFERENCE's row labels: the mean over seeds per model."""
    rows = [r for r in summary.get("results") or [] if isinstance(r, dict)]
    out = {}
    for m in dict.fromkeys(r.get("model") for r in rows):
        for key, what in (("test_loss", "test loss"), ("test_acc", "test accuracy")):
            vals = [r[key] for r in rows if r.get("model") == m and isinstance(r.get(key), (int, float))]
            out[f"{m} {what}"] = sum(vals) / len(vals) if vals else None
    return out
