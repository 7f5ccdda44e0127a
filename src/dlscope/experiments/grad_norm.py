"""4. grad-norm: the full-batch gradient norm and the loss during training.

mlp-mid on f1 (func-fit's settings) and the three CIFAR-10 models of cifar-depth (its settings).
After every epoch (and at initialisation) one pass over the un-augmented training set gives the
full-batch loss and the L2 norm of its gradient over all parameters (of the data loss; the
weight-decay term is not included). For CIFAR this is over the training subset the run uses, not
a mean over mini-batches. The MLP trains on the fast MLP path (engine/fast_mlp.py), all seeds as
one ensemble; the seeds of one CIFAR model train as one ensemble too.

The claim (the original's Fig. 13: "the gradient norm's fluctuations shrink once the model
reaches a minimum") is judged seed by seed from two windows of W = max(3, 10% of the epochs)
epochs each: the one where the loss falls most (the largest log-loss drop over W epochs) and the
last W epochs. The fluctuation of the gradient norm g in a window is the median of
|g(e + 1) - g(e)| over it: epoch-to-epoch changes, so that a trend does not count, in g's own units,
as a reader sees them on the original's linear plot (the relative version, of log10 g, is recorded
too). An MLP seed that ends on the constant-prediction plateau reached no minimum and is left out.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import findings as fnd
from .. import models
from .. import engine
from ..engine import TrainConfig, evaluate_classifier
from ._base import ConfigError, Trial, finished_models, model_color, pyplot, save_fig, seeds_for, trial_per_model
from ._cifar import COMMON, check_sizes
from ._functions import FUNCTIONS, constant_mse, inputs, is_stalled

NAME = "grad-norm"
TITLE = "Gradient norm and loss during training"

# --- for the report and the progress display (see _base.py)
COST = 39  # its share of `run all` (quick, default executor, 2 idle cores; bench/study_time.py, 2026-12-06) in seconds
LOOK_FOR = (
    "The original claims that the gradient norm's fluctuations shrink once the model reaches a minimum (its "
    "Fig 13). The findings above judge it seed by seed, for the MLP (grad-norm-falls) and for the CNNs "
    "(grad-norm-falls-cnn): the typical epoch-to-epoch change of the full-batch gradient norm over the 10% of "
    "epochs where the loss falls most, against the last 10% (shaded in the figures), as a reader sees it on a "
    "linear plot; the -relative findings judge the same for the logarithm of the norm, i.e. the fluctuations "
    "relative to the norm's level, which can stay the same while the norm itself falls. MLP seeds that end on the "
    "constant-prediction plateau reached no minimum and are left out. A second pair of findings "
    "(grad-norm-lower-at-end) judges the level itself: a minimum reached by mini-batch training need not have a "
    "small full-batch gradient, since the noise of the small batches keeps the weights moving around it, and the "
    "norm after the loss's drop can sit above its level on the plateau before the drop. In the figures each thin "
    "line is one seed, the bold line the median over seeds, the band the interquartile range. Each seed's curve is "
    "reduced to one number before seeds are compared (epochs are never resampled); with the CNNs' 3 seeds at quick "
    "a verdict of shown needs a mean above about 2.5 standard deviations of the seeds' values, so inconclusive is "
    "the common answer there, and the note says what the run could have shown."
)
CAPTIONS = {
    "grad_norm_mlp.png": "The full-batch gradient norm (top) and training MSE (bottom) against epoch for mlp-mid "
    "on f1, at the run's batch size and learning rate (quick and full: the original's batch 1, lr 4e-4): each "
    "seed a thin line, the median over seeds bold, the interquartile range as a band, n in the legend; shaded: "
    "the last 10% of epochs, the claim's end window (the original's Fig 13).",
    "grad_norm_cifar.png": "The same for the CIFAR-10 CNNs, over the training subset the run uses, each model's "
    "seeds trained as one ensemble (as the original's Fig 13).",
}
REFERENCE = None  # the original published a figure, no numbers

_FULL = {
    "models": ["mlp-mid", "cnn-1", "cnn-2", "cnn-7"],
    "seeds": 5,  # trainings per CIFAR model (one ensemble); quick: 3
    # the 1-D MLPs: func-fit's settings
    "mlp_seeds": 20,  # one ensemble on the fast path, shaped as func-fit's (2 functions x 10 seeds; quick: 2 x 8 = 16):
    # in one process the two share the compiled loop; some seeds stay on the plateau for 1000s of
    # epochs, and they are left out of the claims, so well over the 10 a paired verdict wants
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
# --- what the settings mean (see _base.py): which measure work (the time estimate), which must be positive
WORK_SETTINGS = {"models": ("seeds",), "length": ("epochs", "mlp_epochs"), "data": ("train_size", "points")}
POSITIVE_SETTINGS = ("seeds", "mlp_seeds", "epochs", "mlp_epochs", "batch_size", "mlp_batch_size", "grad_batch_size", "lr")
NON_NEGATIVE_SETTINGS = ("train_size", "test_size")
PROFILES = {
    "smoke": {
        **_FULL,
        "seeds": 1,
        "mlp_seeds": 3,
        "points": 60,
        "mlp_epochs": 6,
        "mlp_batch_size": 10,
        "epochs": 2,
        "lr_step": 1,
        "train_size": 200,
        "test_size": 100,
    },
    # the MLP at the original's lr and batch size (affordable on the fast path); at lr 4e-4 most
    # seeds leave the plateau by epoch ~650 and settle by ~800, so 1,200 epochs leave a settled end
    # window; the CNNs on 1,000 images so that 3 seeds cost what one did on 3,000 (full: 5 seeds, as
    # the other CIFAR experiments)
    "quick": {
        **_FULL,
        "seeds": 3,
        "mlp_seeds": 16,
        "mlp_epochs": 1200,
        "epochs": 8,
        "lr": 1e-3,
        "lr_step": 6,
        "train_size": 1000,
        "test_size": 500,
    },
    "full": _FULL,
}


def is_mlp(model: str) -> bool:
    return models.info(model)["input_shape"] == (1,)


def validate(settings: dict) -> None:
    for m in settings["models"]:
        if m not in models.names() or models.info(m)["input_shape"] not in ((1,), (3, 32, 32)):
            raise ConfigError(f"models: {m!r} is not a 1-D MLP or a CIFAR-10 model of the zoo")
    if settings["function"] not in FUNCTIONS:
        raise ConfigError(f"function: {settings['function']!r} unknown; choose from {', '.join(FUNCTIONS)}")
    check_sizes(settings)


def trials(settings: dict) -> list[Trial]:
    return trial_per_model(settings, train_model)


def train_model(settings: dict, ctx) -> dict:
    """One model's seeds as one trainer (the MLP's on the fast path, where its full-batch loss and
    gradient norm come in float64 and closed form; batch 1 costs ~10 µs a step there instead of
    ~1 ms), measuring the full-batch loss and gradient norm at initialisation and after every epoch."""
    dev, model = ctx.device, settings["model"]
    seeds = seeds_for(settings, settings["mlp_seeds"] if is_mlp(model) else settings["seeds"])
    if is_mlp(model):
        x = inputs(settings["points"], dev)
        y = FUNCTIONS[settings["function"]](x[:, 0])
        train_config = TrainConfig.from_settings(settings, prefix="mlp_", loss="mse")

        def evaluate(t) -> dict:
            return t.gradient(x, y)
    else:
        data = ctx.load_data("cifar10", settings["train_size"], settings["test_size"])
        x, y = data.train.x, data.train.y
        train_config = TrainConfig.from_settings(settings)

        def evaluate(t) -> dict:
            out = t.gradient(x, y, settings["grad_batch_size"])
            test = evaluate_classifier(t.ens, data.test.x, data.test.y)
            return {**out, "test_loss": test["loss"], "test_acc": test["acc"]}

    trainer = engine.trainer(model, train_config, seeds, dev, examples=len(x), each_epoch=True)
    trainer.run(x, y, evaluate=evaluate, checkpoint=ctx.checkpoint)
    h = trainer.history
    keys = [k for k in ("loss", "grad_norm", "acc", "test_loss", "test_acc") if k in h]
    return {
        "model": model,
        "params": trainer.n_params,
        "seeds": seeds,
        "task": f"{settings['function']} (MSE)" if is_mlp(model) else "CIFAR-10 (cross-entropy)",
        "steps_per_epoch": -(-len(x) // train_config.batch_size),
        **{k: torch.stack(h[k]) for k in keys},  # [epochs + 1, seeds]
        "diverged": (trainer.diverged | ~torch.isfinite(h["loss"][-1])).tolist(),
    }


# --------------------------------------------------------------------------- outputs


def window(epochs: int) -> int:
    """The width W, in epochs, of the claim's two windows: 10% of the run, at least 3 epochs."""
    return max(3, int(round(0.1 * epochs)))


def _log10(values) -> np.ndarray | None:
    a = np.asarray(values, dtype=float)
    return np.log10(a) if np.all(np.isfinite(a)) and np.all(a > 0) else None


def windows(loss, grad_norm) -> dict | None:
    """One seed's statistics of the claim from its curves (index = epoch, 0 = initialisation):
    the drop window [d, d + W] where log10 loss falls most, the end window [E - W, E], and in each
    the fluctuation of the gradient norm (median |Δg| between consecutive epochs), its relative
    fluctuation (median |Δ log10 g|) and its median. None for a diverged curve, a run too short for
    two windows, or windows that overlap (the loss still falling most at the end: no minimum reached to judge)."""
    ll, lg = _log10(loss), _log10(grad_norm)
    if ll is None or lg is None:
        return None
    E = len(ll) - 1
    W = window(E)
    if E < 2 * W:
        return None
    drops = ll[:-W] - ll[W:]  # drops[a] = log10 L(a) - log10 L(a + W)
    d = int(np.argmax(drops))
    if d + W > E - W:
        return None

    def stats(a: int) -> tuple[float, float, float]:
        seg = lg[a : a + W + 1]
        return float(np.median(np.abs(np.diff(10**seg)))), float(np.median(np.abs(np.diff(seg)))), float(10 ** np.median(seg))

    fd, rd, md = stats(d)
    fe, re_, me = stats(E - W)
    return {
        "drop_epoch": d,
        "window": W,
        "fluctuation_at_drop": fd,
        "fluctuation_at_end": fe,
        "relative_fluctuation_at_drop": rd,
        "relative_fluctuation_at_end": re_,
        "median_grad_norm_at_drop": md,
        "median_grad_norm_at_end": me,
    }


def summarize(settings: dict, results: dict) -> dict:
    rows = []
    for m, r in finished_models(settings, results):
        epochs = r["loss"].shape[0] - 1
        for i, seed in enumerate(r["seeds"]):
            loss, g = r["loss"][:, i].tolist(), r["grad_norm"][:, i].tolist()
            row = {
                "model": m,
                "seed": seed,
                "params": r["params"],
                "task": r["task"],
                "epochs": epochs,
                "steps": epochs * r.get("steps_per_epoch", 0),
                "final_loss": loss[-1],
                "final_grad_norm": g[-1],
                "initial_grad_norm": g[0],
                "max_grad_norm": max(g) if all(map(math.isfinite, g)) else None,
            }
            if "test_acc" in r:
                row["final_test_acc"] = r["test_acc"][-1, i].item()
            w = windows(loss, g)
            row.update(w or {"drop_epoch": None})
            if is_mlp(m):  # on the plateau of the best constant output: no minimum reached
                row["stalled"] = is_stalled(loss[-1], constant_mse(settings["function"], settings["points"]))
            row["diverged"] = bool(r["diverged"][i]) or not (math.isfinite(loss[-1]) and math.isfinite(g[-1]))
            rows.append(row)
    return {
        "results": rows,
        "findings": [c.as_dict() for c in claims(rows)],
        "grad_norm_definition": "L2 norm over all parameters of the gradient of the full-batch mean loss (no weight-decay term), "
        "measured at initialisation and after every epoch in a separate pass over the un-augmented "
        "training set (for CIFAR: the run's training subset, not a mean over mini-batches)",
        "loss_definition": "full-batch mean training loss from the same pass (MSE for the MLP, cross-entropy for CIFAR)",
        "fluctuation_definition": "per seed: median of |g(e+1) - g(e)| (relative: of |log10 g(e+1) - log10 g(e)|) over a window "
        "of W = max(3, 10% of the epochs) epochs; drop window: the W epochs with the largest fall of "
        "log10 loss; end window: the last W. stalled (MLP): final MSE within 1% of the constant-prediction "
        "MSE, as in func-fit",
    }


# --------------------------------------------------------------------------- claims


def _where_they_ended(rows: list[dict]) -> str:
    """Where the judged seeds ended, for a finding's note: is it a minimum at all?"""
    losses = fnd.finite(r.get("final_loss") for r in rows)
    steps = sorted({r.get("steps") for r in rows if r.get("steps")})
    if not len(losses):
        return ""
    return f"; they ended at a median train loss of {np.median(losses):.3g} after {', '.join(f'{s:,}' for s in steps)} steps"


def _judged(rows: list[dict], mlp: bool) -> tuple[list[dict], int]:
    """The rows of one group (the MLP or the CNNs) with both windows, and how many were left out."""
    group = [r for r in rows if is_mlp(r["model"]) == mlp]
    ok = [
        r
        for r in group
        if r.get("fluctuation_at_end") is not None
        and r["fluctuation_at_end"] > 0
        and r["fluctuation_at_drop"] > 0
        and not r.get("stalled")
    ]
    return ok, len(group) - len(ok)


def claim_fluctuations_shrink(rows: list[dict], mlp: bool = True, relative: bool = False) -> fnd.Finding:
    """Per seed, log10(fluctuation at the drop / fluctuation at the end) of the gradient norm: the
    claim says positive. Each seed's curve is first reduced to this one number (time points are
    never resampled: they are autocorrelated); over seeds, findings.greater: the Student-t interval
    of the mean above 0, and from 6 seeds the exact sign-flip test too. With 3 CNN seeds only a
    mean above about 2.5 SD of the seeds' values can be shown.
    relative: the fluctuation of log10 g instead of g (changes relative to the norm's level)."""
    ok, left = _judged(rows, mlp)
    what = "the MLP" if mlp else "the CNNs"
    key = "relative_fluctuation" if relative else "fluctuation"
    ident = "grad-norm-falls" + ("-relative" if relative else "") + ("" if mlp else "-cnn")
    vals = [
        math.log10(r[f"{key}_at_drop"] / r[f"{key}_at_end"]) for r in ok if r.get(f"{key}_at_drop") and r.get(f"{key}_at_end")
    ]
    stat = fnd.greater(vals)
    models_ = sorted({r["model"] for r in ok})
    of = "log10 g" if relative else "g"
    note = (
        f"{', '.join(models_) or 'no model'}; smaller at the end in {sum(v > 0 for v in vals)} of {len(vals)} seeds "
        f"(>0: the epoch-to-epoch changes of {of} are smaller in the last 10% of epochs than where the loss fell most); "
        f"{left} seed(s) left out (diverged, stalled on the plateau, or still falling most at the end){_where_they_ended(ok)}"
    )
    if stat.n < 2:
        note = "fewer than 2 seeds with both windows: " + note
    claim = f"The gradient norm's fluctuations shrink once {what} reaches a minimum"
    return fnd.Finding.from_stat(
        stat,
        ident,
        claim + (" (relative to its level)" if relative else ""),
        "original",
        f"mean over seeds of log10(median |Δ{of}| between epochs where the loss falls most / "
        "over the last 10% of epochs), one number per seed, paired t over seeds",
        note,
    )


def claim_norm_lower_at_end(rows: list[dict], mlp: bool = True) -> fnd.Finding:
    """Per seed, log10(median gradient norm in the drop window / in the end window): positive if
    the gradient norm is smaller at the end, as it would be at a minimum reached. One number per
    seed, then findings.greater over seeds, as for the fluctuations."""
    ok, left = _judged(rows, mlp)
    what = "the MLP" if mlp else "the CNNs"
    vals = [math.log10(r["median_grad_norm_at_drop"] / r["median_grad_norm_at_end"]) for r in ok]
    stat = fnd.greater(vals)
    return fnd.Finding.from_stat(
        stat,
        "grad-norm-lower-at-end" + ("" if mlp else "-cnn"),
        f"The gradient norm of {what} is lower at the end than where the loss falls most",
        "dlscope (what reaching a minimum implies)",
        "mean over seeds of log10(median gradient norm where the loss falls most / over the last "
        "10% of epochs), one number per seed, paired t over seeds",
        f"1 = ten times lower at the end; lower at the end in {sum(v > 0 for v in vals)} of "
        f"{len(vals)} seeds; {left} seed(s) left out{_where_they_ended(ok)}",
    )


def claims(rows: list[dict]) -> list[fnd.Finding]:
    out = []
    for mlp in (True, False):
        if any(is_mlp(r["model"]) == mlp for r in rows):
            out += [
                claim_fluctuations_shrink(rows, mlp),
                claim_fluctuations_shrink(rows, mlp, relative=True),
                claim_norm_lower_at_end(rows, mlp),
            ]
    return out


def metrics(settings: dict, results: dict) -> list[dict]:
    rows = []
    for m, r in results.items():
        for i, seed in enumerate(r["seeds"]):
            for k in ("loss", "grad_norm", "acc", "test_loss", "test_acc"):
                if k in r:
                    for e, v in enumerate(r[k][:, i].tolist()):
                        rows.append(
                            {
                                "model": m,
                                "seed": seed,
                                "epoch": e,
                                "metric": "train_" + k if k in ("loss", "acc") else k,
                                "value": v,
                            }
                        )
    return rows


def wide_range(ax, factor: float = 2.5) -> bool:
    """Whether the positive data on an axis spans more than `factor` (then a log axis helps)."""
    lines = ax.get_lines()
    if not lines:
        return False
    ys = torch.cat([torch.as_tensor(line.get_ydata(), dtype=torch.float64).reshape(-1) for line in lines])
    ys = ys[torch.isfinite(ys) & (ys > 0)]
    return len(ys) > 0 and float(ys.max() / ys.min()) > factor


def _finite_seeds(curves: torch.Tensor) -> np.ndarray:
    """[epochs + 1, seeds] -> the same for the seeds whose curve is finite throughout."""
    a = curves.double().numpy()
    return a[:, np.isfinite(a).all(0)]


def figures(settings: dict, results: dict, fig_dir) -> list[str]:
    plt = pyplot()

    paths = []
    mlp_title = (
        f"on {settings['function']} (full-batch MSE; trained at batch size {settings['mlp_batch_size']}, "
        f"lr {settings['mlp_lr']:g})"
    )
    groups = (
        ("mlp", mlp_title, "MSE", [m for m in settings["models"] if is_mlp(m)]),
        (
            "cifar",
            "CIFAR-10 models (full-batch cross-entropy over the training subset)",
            "cross-entropy",
            [m for m in settings["models"] if not is_mlp(m)],
        ),
    )
    for tag, title, loss_name, names in groups:
        names = [m for m in names if m in results]
        if not names:
            continue
        fig, (ax_g, ax_l) = plt.subplots(2, 1, sharex=True, figsize=(8, 6.5), layout="constrained")
        for m in names:
            r, color = results[m], model_color(m)
            n_all = len(r["seeds"])
            for ax, key in ((ax_g, "grad_norm"), (ax_l, "loss")):
                curves = _finite_seeds(r[key])
                n = curves.shape[1]
                label = f"{m} ({r['params']:,} params): median of n={n}, IQR band" + (
                    f" ({n_all - n} diverged)" if n < n_all else ""
                )
                if not n:
                    ax.plot([], [], color=color, lw=2, label=label)
                    continue
                epochs = np.arange(curves.shape[0])
                ax.plot(epochs, curves, color=color, lw=0.4, alpha=0.3)  # each seed
                lo, med, hi = np.percentile(curves, [25, 50, 75], axis=1)
                ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, lw=0)
                ax.plot(epochs, med, color=color, lw=1.8, label=label)
        epochs = results[names[0]]["loss"].shape[0] - 1
        for ax, what in ((ax_g, "gradient norm ||∇L||"), (ax_l, f"training {loss_name}")):
            log = wide_range(ax)  # log y only where it helps: a narrow range reads better linear
            ax.set(yscale="log" if log else "linear", ylabel=what + (" (log scale)" if log else ""))
            if epochs >= 2 * window(epochs):  # (a run too short for two windows has no end window)
                ax.axvspan(
                    epochs - window(epochs),
                    epochs,
                    color="0.85",
                    zorder=0,
                    label=f"last {window(epochs)} epochs (the claim's end window)" if ax is ax_g else None,
                )
        ax_g.set_title(f"{', '.join(names)} {title}" if tag == "mlp" else title, fontsize=11)
        ax_l.set_xlabel("epoch (0 = initialisation)")
        for ax in (ax_g, ax_l):
            ax.grid(alpha=0.3, which="both")
            ax.xaxis.get_major_locator().set_params(integer=True)
        fig.legend(*ax_g.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)  # inside, it hides curves
        paths.append(save_fig(fig, fig_dir / f"grad_norm_{tag}.png"))
    return paths
