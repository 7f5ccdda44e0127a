"""4. grad-norm: the full-batch gradient norm and the loss during training.

mlp-mid on f1 (func-fit's settings) and the three CIFAR-10 models of cifar-depth (its settings).
After every epoch (and at initialisation) one pass over the un-augmented training set gives the
full-batch loss and the L2 norm of its gradient over all parameters (of the data loss; the
weight-decay term is not included). For CIFAR this is over the training subset the run uses, not
a mean over mini-batches.
"""

from __future__ import annotations

import torch

from .. import models
from ..analysis.hessian import ensemble_gradient
from ..engine import Ensemble, Trainer, TrainConfig, evaluate_classifier
from .base import ConfigError, Trial, finished_models, save_fig, seeds_for, trial_per_model
from .cifar import COMMON, check_sizes
from .func_fit import FUNCTIONS, inputs

NAME = "grad-norm"
TITLE = "Gradient norm and loss during training"

# --- for the report and the progress display (see base.py)
COST = 72  # seconds of the quick profile on the reference CPU; only the ratios between experiments matter
LOOK_FOR = ("whether the gradient norm shrinks as the loss falls; often it does not, and training "
            "ends far from a critical point.")
CAPTIONS = {
    "grad_norm_mlp.png": "The full-batch gradient norm (top) and the training loss (bottom) against epoch for "
    "the 1-D MLP on its function (the original's Fig 13).",
    "grad_norm_cifar.png": "The same for the CIFAR-10 CNNs, over the training subset the run uses "
    "(as the original's Fig 13).",
}
REFERENCE = None  # the original published a figure, no numbers

_FULL = {
    "models": ["mlp-mid", "cnn-1", "cnn-2", "cnn-7"],
    "seeds": 1,  # trainings per CIFAR model
    # the 1-D MLPs: func-fit's settings
    "mlp_seeds": 3,  # one mlp-mid training can stay on a plateau (seed 0: MSE 0.087 for 1500 epochs)
    "function": "f1",
    "points": 300,
    "mlp_epochs": 20000,
    "mlp_batch_size": 1,
    "mlp_lr": 4e-4,
    "mlp_weight_decay": 1e-4,
    # the CIFAR-10 models: cifar-depth's settings
    "epochs": 100,
    "batch_size": 64,
    **COMMON,
    "grad_batch_size": 500,  # chunks of the full-batch gradient pass (memory only)
}
PROFILES = {
    "smoke": {**_FULL, "points": 60, "mlp_epochs": 6, "mlp_batch_size": 10, "epochs": 2, "lr_step": 1,
              "train_size": 200, "test_size": 100},
    "quick": {**_FULL, "mlp_epochs": 800, "mlp_batch_size": 10, "mlp_lr": 2e-3,
              "epochs": 8, "lr": 1e-3, "lr_step": 6, "train_size": 3000, "test_size": 1000},
    "full": _FULL,
}


def is_mlp(model: str) -> bool:
    return models.info(model)["input_shape"] == (1,)


def validate(cfg: dict) -> None:
    for m in cfg["models"]:
        if m not in models.names() or models.info(m)["input_shape"] not in ((1,), (3, 32, 32)):
            raise ConfigError(f"models: {m!r} is not a 1-D MLP or a CIFAR-10 model of the zoo")
    if cfg["function"] not in FUNCTIONS:
        raise ConfigError(f"function: {cfg['function']!r} unknown; choose from {', '.join(FUNCTIONS)}")
    check_sizes(cfg)


def trials(cfg: dict) -> list[Trial]:
    return trial_per_model(cfg, train_model)


def train_model(args: dict, ctx) -> dict:
    dev, model = ctx.device, args["model"]
    seeds = seeds_for(args, args["mlp_seeds"] if is_mlp(model) else args["seeds"])
    ens = Ensemble.from_seeds(model, seeds, dev)
    if is_mlp(model):
        x = inputs(args["points"], dev)
        y = FUNCTIONS[args["function"]](x[:, 0])
        cfg = TrainConfig(args["mlp_epochs"], args["mlp_batch_size"], args["mlp_lr"], args["mlp_weight_decay"], loss="mse")

        def evaluate(t: Trainer) -> dict:
            return ensemble_gradient(t.ens, x, y, loss="mse", batch_size=len(x))
    else:
        data = ctx.load_data("cifar10", args["train_size"], args["test_size"])
        x, y = data.train.x, data.train.y
        cfg = TrainConfig(args["epochs"], args["batch_size"], args["lr"], args["weight_decay"], args["lr_step"],
                          args["lr_gamma"], args["augment"], amp=args["amp"])

        def evaluate(t: Trainer) -> dict:
            out = ensemble_gradient(t.ens, x, y, loss="ce", batch_size=args["grad_batch_size"])
            test = evaluate_classifier(t.ens, data.test.x, data.test.y)
            return {**out, "test_loss": test["loss"], "test_acc": test["acc"]}

    trainer = Trainer(ens, cfg, seeds)
    trainer.run(x, y, evaluate=evaluate, checkpoint=ctx.checkpoint)
    h = trainer.history
    keys = [k for k in ("loss", "grad_norm", "acc", "test_loss", "test_acc") if k in h]
    return {
        "model": model,
        "params": ens.n_params(),
        "seeds": seeds,
        "task": f"{args['function']} (MSE)" if is_mlp(model) else "CIFAR-10 (cross-entropy)",
        **{k: torch.stack(h[k]) for k in keys},  # [epochs + 1, seeds]
        "diverged": trainer.diverged.tolist(),
    }


# --------------------------------------------------------------------------- outputs


def summarize(cfg: dict, results: dict) -> dict:
    rows = []
    for m, r in finished_models(cfg, results):
        row = {"model": m, "params": r["params"], "task": r["task"], "epochs": r["loss"].shape[0] - 1,
               "final_grad_norm": r["grad_norm"][-1].mean().item(), "final_loss": r["loss"][-1].mean().item(),
               "initial_grad_norm": r["grad_norm"][0].mean().item(), "max_grad_norm": r["grad_norm"].max().item()}
        if len(r["seeds"]) > 1:  # the numbers above are means over these trainings
            row["seeds"] = r["seeds"]
            row["final_grad_norm_per_seed"] = r["grad_norm"][-1].tolist()
            row["final_loss_per_seed"] = r["loss"][-1].tolist()
        if "test_acc" in r:
            row["final_test_acc"] = r["test_acc"][-1].mean().item()
        row["diverged"] = any(r["diverged"])
        rows.append(row)
    return {
        "results": rows,
        "grad_norm_definition": "L2 norm over all parameters of the gradient of the full-batch mean loss (no weight-decay term), "
                                "measured at initialisation and after every epoch in a separate pass over the un-augmented "
                                "training set (for CIFAR: the run's training subset, not a mean over mini-batches)",
        "loss_definition": "full-batch mean training loss from the same pass (MSE for the MLP, cross-entropy for CIFAR)",
    }


def metrics(cfg: dict, results: dict) -> list[dict]:
    rows = []
    for m, r in results.items():
        for i, seed in enumerate(r["seeds"]):
            for k in ("loss", "grad_norm", "acc", "test_loss", "test_acc"):
                if k in r:
                    for e, v in enumerate(r[k][:, i].tolist()):
                        rows.append({"model": m, "seed": seed, "epoch": e, "metric": "train_" + k if k in ("loss", "acc") else k, "value": v})
    return rows


def wide_range(ax, factor: float = 2.5) -> bool:
    """Whether the positive data on an axis spans more than `factor` (then a log axis helps)."""
    ys = torch.cat([torch.as_tensor(line.get_ydata(), dtype=torch.float64) for line in ax.get_lines()])
    ys = ys[torch.isfinite(ys) & (ys > 0)]
    return len(ys) > 0 and float(ys.max() / ys.min()) > factor


def figures(cfg: dict, results: dict, fig_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(cfg["models"], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    paths = []
    groups = (("mlp", f"mlp-mid on {cfg['function']} (full-batch MSE)", "MSE", [m for m in cfg["models"] if is_mlp(m)]),
              ("cifar", "CIFAR-10 models (full-batch cross-entropy over the training subset)", "cross-entropy",
               [m for m in cfg["models"] if not is_mlp(m)]))
    for tag, title, loss_name, names in groups:
        names = [m for m in names if m in results]
        if not names:
            continue
        fig, (ax_g, ax_l) = plt.subplots(2, 1, sharex=True, figsize=(8, 6.5), layout="constrained")
        for m in names:
            r = results[m]
            epochs = torch.arange(r["loss"].shape[0])
            for i, seed in enumerate(r["seeds"]):
                # one model with several seeds: a colour per seed; else a colour per model
                color = colors[m] if len(names) > 1 else plt.get_cmap("tab10")(i)
                label = f"{m} ({r['params']:,} params)" + (f", seed {seed}" if len(r["seeds"]) > 1 else "")
                if len(names) > 1 and i > 0:
                    label = None
                ax_g.plot(epochs, r["grad_norm"][:, i], color=color, lw=1, label=label)
                ax_l.plot(epochs, r["loss"][:, i], color=color, lw=1, label=label)
        for ax, what in ((ax_g, "gradient norm ||∇L||"), (ax_l, f"training {loss_name}")):
            log = wide_range(ax)  # log y only where it helps: a narrow range reads better linear
            ax.set(yscale="log" if log else "linear", ylabel=what + (" (log scale)" if log else ""))
        ax_g.set_title(title, fontsize=11)
        ax_l.set_xlabel("epoch (0 = initialisation)")
        for ax in (ax_g, ax_l):
            ax.grid(alpha=0.3, which="both")
            ax.xaxis.get_major_locator().set_params(integer=True)
        fig.legend(*ax_g.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8)  # inside, it hides curves
        paths.append(save_fig(fig, fig_dir / f"grad_norm_{tag}.png"))
    return paths
