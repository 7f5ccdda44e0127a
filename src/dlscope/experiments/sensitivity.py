"""9. sensitivity: input sensitivity of cnn-1 vs batch size and vs learning rate (Novak et al. 2018).

Sensitivity = the Frobenius norm of the Jacobian of the class probabilities with respect to the
input image, averaged over a fixed, class-balanced set of test images (analysis.sensitivity).
Every configuration trains `seeds` times; seed k (the run's seed + k) gives the same
initialisation and data order to every batch size and lr, so the configurations compare seed by
seed. A batch size's seeds train as one ensemble (one trial per batch size); the learning rates
share shapes and steps and train as one ensemble with a learning rate per member. Budgets are
fair (side_budget): each configuration gets at least `epochs` epochs and `min_steps` steps.
A diverged member (a non-finite loss, or exploded weights: base.blown_up) is recorded as
diverged, its numbers as null.
"""

from __future__ import annotations

import math

from .. import models
from ..analysis.sensitivity import ensemble_sensitivity
from ..data import balanced_subset
from ..findings import INCONCLUSIVE, NOT_SHOWN, SHOWN, Finding, Stat, correlation, finite_or_none, spearman, trend
from . import _curvature as curvature
from ._base import ConfigError, Trial, blown_up, plot_median_iqr, pyplot, save_fig, seeds_for
from ._cifar import (
    CIFAR_NON_NEGATIVE,
    CIFAR_WORK,
    COMMON,
    COMPARISON_POSITIVE,
    METRICS,
    SPLIT_COLORS,
    check_model,
    check_sizes,
    diverged,
    history,
    side_budget,
    train_cifar,
)

NAME = "sensitivity"
TITLE = "Flatness 2: input sensitivity vs batch size and learning rate"

# --- for the report and the progress display (see _base.py)
COST = 81  # its share of `run all` (quick, default executor, 2 idle cores; bench/study_time.py, 2026-12-06) in seconds
LOOK_FOR = (
    "two claims that need not agree, each with its own verdict. The original found sensitivity "
    "falling as the batch size grows (and as the learning rate grows), together with test accuracy: "
    "`sensitivity-falls-with-batch`, `sensitivity-falls-with-lr`, `accuracy-falls-with-batch`, "
    "seed by seed: Page's trend test with the seeds as blocks, shown only where the configurations fall in "
    "the claimed order consistently across seeds (with 3 seeds and 4 batch sizes a mean Spearman ρ of about "
    "0.73 is needed; the note gives each seed's ρ). Novak et al. (2018) found sensitivity rising with the "
    "generalization gap across models: `sensitivity-tracks-gap`, Spearman's ρ over every trained model of "
    "both sweeps (a permutation test that treats the models as independent, though each seed's share an "
    "initialisation), drawn in the scatter of sensitivity against the train − test accuracy gap. If large batches lower "
    "sensitivity but widen the gap, the two come out opposed, and that is a finding. Every configuration trained at "
    "least `epochs` epochs and `min_steps` optimizer steps (rows give its steps and final train loss), "
    "so the large batches are not judged after a few dozen steps. Keskar et al.'s own measure is taken on every "
    "trained model too (top Hessian eigenvalue, trace, Keskar ε-sharpness; the curvature figures): "
    "`sharpness-rises-with-batch` asks whether the sharpness rises with the batch size, seed by seed."
)
CAPTIONS = {
    "loss_vs_batch.png": "Train and test loss (left axis) and input sensitivity (right axis) against batch size "
    "at a fixed learning rate, median over seeds with the interquartile range (the original's Figs 17 and 18).",
    "acc_vs_batch.png": "Train and test accuracy (left axis) and input sensitivity (right axis) against batch size "
    "at a fixed learning rate, median over seeds with the interquartile range; stars: the original's test accuracy "
    "at full settings (the original's Figs 17 and 18).",
    "loss_vs_lr.png": "Train and test loss (left axis) and input sensitivity (right axis) against learning rate "
    "at a fixed batch size, median over seeds with the interquartile range (the original's Figs 20 and 21).",
    "acc_vs_lr.png": "Train and test accuracy (left axis) and input sensitivity (right axis) against learning rate "
    "at a fixed batch size, median over seeds with the interquartile range; stars: the original's test accuracy "
    "at full settings (the original's Figs 20 and 21).",
    "curvature_vs_batch.png": "Curvature of each trained model against batch size: top Hessian eigenvalue, Hessian "
    "trace (Hutch++) and Keskar ε-sharpness of the training loss on a fixed subset of training images, eval mode; "
    "median over seeds with the interquartile range, n in the legend. `sharpness-rises-with-batch` tests the "
    "Keskar panel seed by seed (Keskar et al. 2017).",
    "curvature_vs_lr.png": "The same curvature measures against learning rate at a fixed batch size, median over "
    "seeds with the interquartile range, n in the legend.",
    "sensitivity_vs_gap.png": "Sensitivity against the generalization gap (train − test accuracy), one point per "
    "trained model and seed, coloured by batch size or learning rate (Novak et al. 2018).",
}
REFERENCE = {  # the original study's test accuracy (SPEC), by batch size (lr 4e-4) and by learning rate (batch 512)
    "what": "test accuracy per batch size (lr 4e-4) and per learning rate (batch 512)",
    "original": "after 25 epochs",
    "kind": "acc",
    "rows": {
        "batch 16": 0.619,
        "batch 64": 0.577,
        "batch 256": 0.575,
        "batch 1024": 0.526,
        "batch 4096": 0.464,
        "lr 0.1": 0.156,
        "lr 0.01": 0.341,
        "lr 0.001": 0.599,
        "lr 0.0001": 0.473,
        "lr 1e-05": 0.354,
    },
}
DIFFERENCES = [
    (
        "Sensitivity (experiments 8 and 9)",
        "dlscope: the Frobenius norm of the Jacobian of the softmax output (class probabilities) with "
        "respect to the input image, per test image, averaged over test images. The original: a norm "
        "of the gradient of the loss with respect to the parameters, on one mini-batch.",
        "The Jacobian norm is Novak et al.'s (2018) measure, the one shown to track the generalization "
        "gap: it describes the function the network computes at test points, independent of how it is "
        "parameterised and of which mini-batch happens to be drawn. A parameter-gradient norm on one "
        "batch measures the slope of the training loss in weight space, which is a different quantity "
        "and noisy. Numbers of the two do not compare.",
    ),
    (
        "Training budget per configuration (experiments 8 and 9)",
        "dlscope: every batch size and learning rate trains at least `epochs` epochs and at least `min_steps` "
        "optimizer steps (whole epochs), its lr drop at the same fraction of its training; the original: 25 epochs "
        "each. At full settings 25 epochs already give every configuration ≥ 300 steps, so full is the original's.",
        "Equal epochs give a large batch few steps (the quick profile's batch 4096 once had 16 in all): its end "
        "would be compared half-trained, and the comparison would measure the budget, not the batch size.",
    ),
]

_FULL = {
    "model": "cnn-1",
    "seeds": 5,  # per configuration; seed k is shared by every batch size and lr (paired by seed); quick: 3
    "epochs": 25,
    # Fair budgets: every configuration trains at least `epochs` epochs AND at least `min_steps`
    # optimizer steps (as many whole epochs as that takes), with the StepLR drops stretched in
    # proportion; a large batch otherwise gets a few dozen steps. In full (SPEC) 25 epochs already
    # give every batch size >= 300 steps (batch 4096: 13 a epoch), so full keeps SPEC's settings.
    "min_steps": 300,
    "batch_sizes": [16, 64, 256, 1024, 4096],
    "batch_sweep_lr": 4e-4,
    "lrs": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5],
    "lr_sweep_batch_size": 512,
    **{k: v for k, v in COMMON.items() if k != "lr"},  # the lr is what the pairs/sweeps set
    "sensitivity_samples": 10000,  # test images the sensitivity averages over (all of them in full)
    "eval_every": 1,
    **curvature.SETTINGS,  # each trained model's top eigenvalue, trace and Keskar sharpness (experiments/_curvature.py)
    "curvature_samples": 1000,
}
# --- what the settings mean (see _base.py): which measure work (the time estimate), which must be positive
WORK_SETTINGS, NON_NEGATIVE_SETTINGS = CIFAR_WORK, CIFAR_NON_NEGATIVE
POSITIVE_SETTINGS = (*COMPARISON_POSITIVE, "lr_sweep_batch_size")
PROFILES = {
    "smoke": {
        **_FULL,
        "seeds": 2,
        "epochs": 1,
        "min_steps": 2,
        "batch_sizes": [64, 128, 512],
        "lrs": [1e-1, 1e-3, 1e-4],
        "lr_sweep_batch_size": 128,
        "train_size": 256,
        "test_size": 128,
        "sensitivity_samples": 16,
        "curvature_samples": 64,
        "curvature_max_steps": 8,
        "trace_hvp": 6,
        "keskar_steps": 2,
    },
    # 2,048 training images, 3 seeds (full: 5). Batch sizes 16 ... 512 (not 4096: 200 steps of it, 3 seeds,
    # would be 2.5 M images, ten times this profile's budget) and the lr sweep at batch 128 (not
    # 512, for the same reason). Every configuration gets >= 12 epochs and >= 200 optimizer steps:
    # batch 512 trains 50 epochs, batch 256 25, the rest 12; the lr drops at 3/4 of each one's
    # training (9 of 12 epochs). Sensitivity over 250 test images; curves every 3 epochs. Curvature
    # on 128 training images, small budgets (curvature.QUICK).
    "quick": {
        **_FULL,
        "epochs": 12,
        "min_steps": 200,
        "lr_step": 9,
        "batch_sizes": [16, 64, 256, 512],
        "lr_sweep_batch_size": 128,
        "train_size": 2048,
        "test_size": 1000,
        "sensitivity_samples": 250,
        "eval_every": 3,
        "seeds": 3,
        **curvature.QUICK,
    },
    "full": _FULL,
}


def validate(settings: dict) -> None:
    check_model(settings["model"], "model")
    check_sizes(settings)
    if not 0 < settings["sensitivity_samples"] <= settings["test_size"]:
        raise ConfigError("sensitivity_samples must be in 1..test_size")
    if len(set(settings["batch_sizes"])) != len(settings["batch_sizes"]):
        raise ConfigError("batch_sizes: values must differ")
    if len(set(settings["lrs"])) != len(settings["lrs"]):
        raise ConfigError("lrs: values must differ")
    if settings["min_steps"] < 0:
        raise ConfigError("min_steps must not be negative")
    curvature.validate(settings)


def trials(settings: dict) -> list[Trial]:
    out = [
        Trial(
            key=f"batch-{b}",
            fn=train_sweep,
            settings={**settings, "sweep": "batch", "batch_size": b, "sweep_lrs": [settings["batch_sweep_lr"]]},
            label=f"batch {b}",
        )
        for b in settings["batch_sizes"]
    ]
    out.append(
        Trial(
            key="lr",
            fn=train_sweep,
            settings={**settings, "sweep": "lr", "batch_size": settings["lr_sweep_batch_size"], "sweep_lrs": settings["lrs"]},
            label=f"lrs {', '.join(f'{v:g}' for v in settings['lrs'])}",
            weight=len(settings["lrs"]),  # an ensemble member per learning rate: the longest trial
        )
    )
    return out


def train_sweep(settings: dict, ctx) -> dict:
    """One batch size (a member per seed) or all learning rates (a member per lr and seed, as one
    ensemble with a learning rate per member), then the sensitivity of every member."""
    seeds = seeds_for(settings, settings["seeds"])
    lrs = [lr for lr in settings["sweep_lrs"] for _ in seeds]  # lr-major: member i = (lr i // n, seed i % n)
    member_seeds = seeds * len(settings["sweep_lrs"])
    budget = side_budget(settings, settings["batch_size"])
    trainer, data = train_cifar(
        settings, ctx, settings["model"], member_seeds, lr=lrs, batch_size=settings["batch_size"], budget=budget
    )
    sens_x = data.test.x[balanced_subset(data.test.y, settings["sensitivity_samples"]).to(data.test.x.device)]
    sens = ensemble_sensitivity(trainer.ens, sens_x, models.outputs_probabilities(settings["model"]))
    div = [d or b or not math.isfinite(s) for d, b, s in zip(diverged(trainer), blown_up(trainer.ens), sens.tolist())]
    curv = curvature.measure(trainer.ens, curvature.subset(settings, data.train), settings, div)
    labels = [
        f"{settings['sweep']} sweep: batch {settings['batch_size']}, lr {lr:g}, seed {s}" for lr, s in zip(lrs, member_seeds)
    ]
    return {
        "sweep": settings["sweep"],
        "batch_size": settings["batch_size"],
        # the batch the trainer really used: a batch larger than the training set is the whole set
        "effective_batch_size": min(settings["batch_size"], len(data.train)),
        "lrs": lrs,
        "seeds": member_seeds,
        **budget,
        **history(trainer),  # [E] and [E, N]
        "sensitivity": sens,  # [N]
        "sensitivity_samples": len(sens_x),
        "diverged": div,
        "curvature": curv,  # per member: top_eigenvalue, trace, trace_ci, keskar (None: diverged)
        "weights": curvature.kept_weights(settings["model"], trainer.ens, labels),  # for `dlscope analyze --run`
    }


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def rows(settings: dict, results: dict) -> list[dict]:
    """One row per trained model (configuration and seed), batch sweep then lr sweep; a diverged
    one's numbers are None. Each row says where its training ended: epochs, optimizer steps, the
    final train loss, and how much the mean mini-batch loss still fell over the last quarter of
    the epochs (near 0: a plateau)."""
    out = []
    keys = [f"batch-{b}" for b in settings["batch_sizes"]] + ["lr"]
    for key in keys:
        r = results.get(key)
        if r is None:
            continue
        batch_loss = r["batch_loss"]  # [epochs, N]
        quarter = max(0, len(batch_loss) - 1 - len(batch_loss) // 4)
        for i, (lr, seed) in enumerate(zip(r["lrs"], r["seeds"])):
            row = {
                "sweep": r["sweep"],
                "batch_size": r["batch_size"],
                "lr": lr,
                "seed": seed,
                "epochs": r["epochs_trained"],
                "steps": r["steps"],
            }
            vals = {k: r[k][-1, i].item() for k in METRICS} | {"sensitivity": r["sensitivity"][i].item()}
            vals["acc_gap"] = vals["train_acc"] - vals["test_acc"]  # the generalization gap
            vals["loss_gap"] = vals["test_loss"] - vals["train_loss"]
            vals["train_loss_fall_last_quarter"] = (batch_loss[quarter, i] - batch_loss[-1, i]).item()
            row.update({k: None if r["diverged"][i] else finite_or_none(v) for k, v in vals.items()})
            row.update(curvature.member_fields(r.get("curvature"), i))
            row["diverged"] = bool(r["diverged"][i])
            if r["effective_batch_size"] != r["batch_size"]:
                row["effective_batch_size"] = r["effective_batch_size"]
            ref = REFERENCE["rows"].get(reference_label(r["sweep"], r["batch_size"], lr))
            if ref is not None:
                row["original_test_acc"] = ref
            out.append(row)
    return out


# --------------------------------------------------------------------------- claims


def seedwise_trend(table: list[dict], sweep: str, xkey: str, ykey: str, sign: int) -> tuple[Stat, int, list[float]]:
    """findings.trend of `ykey` against the swept `xkey`: Page's L, exact, seeds as blocks; effect
    size the mean per-seed Spearman rho. A seed with a diverged or missing configuration is left
    out (its rho would rest on other points than the others'). Returns (the Stat, seeds left out,
    sign * rho of each seed used)."""
    pts = [r for r in table if r["sweep"] == sweep]
    seeds = sorted({r["seed"] for r in pts})
    grid = {(r["seed"], r[xkey]): r.get(ykey) for r in pts}
    # a configuration that diverged in every seed (e.g. the largest lr) is left out as a level,
    # so that it does not take every seed with it; then a seed missing any other level is left out
    xs = sorted(x for x in {r[xkey] for r in pts} if any(_finite(grid.get((s, x))) for s in seeds))
    per_seed = []
    for s in seeds:
        ys = [grid.get((s, x)) for x in xs]
        if all(_finite(y) for y in ys):
            per_seed.append(ys)
    left = len(seeds) - len(per_seed)
    if len(xs) < 3 or not per_seed:
        why = "fewer than 3 values swept" if len(xs) < 3 else "no seed with every configuration measured"
        return (
            Stat(
                None,
                None,
                INCONCLUSIVE,
                len(per_seed) if len(xs) >= 3 else 0,
                test="page-L",
                sample={"x": [float(x) for x in xs], "y": [], "sign": sign, "margin": 0.0},
                reason=why,
            ),
            left,
            [],
        )
    rhos = [sign * (spearman(xs, ys) or 0.0) + 0.0 for ys in per_seed]  # + 0.0: no -0.00
    return trend(xs, per_seed, sign), left, rhos


CHANCE_MARGIN = 0.12  # test accuracy at or below this: a model at chance (10 classes)


def _trend_note(stat: Stat, what: str, moves: str, rhos: list[float]) -> str:
    """One line: how many seeds go the claimed way, each seed's rho (the verdict's reason, when it
    is inconclusive, is appended by Finding.from_stat)."""
    if stat.value is None:
        return "no trend to test"
    each = f" (ρ per seed, + = {moves}: {', '.join(f'{r:.2f}' for r in rhos)})"
    k = sum(r > 0 for r in rhos)
    if stat.verdict == SHOWN:
        return f"{what} {moves} in {k} of {len(rhos)} seeds, consistently enough for Page's test{each}"
    if stat.verdict == NOT_SHOWN:
        return f"{what} does not {moves.removesuffix('s')}: the seeds agree on the opposite order{each}"
    return f"{what} {moves} in {k} of {len(rhos)} seeds: the seeds disagree or the order is within chance{each}"


def claims(settings: dict, table: list[dict]) -> list[dict]:
    out = []
    for sweep, xkey, what in (("batch", "batch_size", "batch size"), ("lr", "lr", "learning rate")):
        stat, left, rhos = seedwise_trend(table, sweep, xkey, "sensitivity", -1)
        note = (
            f"{len({r[xkey] for r in table if r['sweep'] == sweep})} {what}s; "
            + (f"{left} seed(s) left out (diverged); " if left else "")
            + _trend_note(stat, "sensitivity", "falls", rhos)
        )
        out.append(
            Finding.from_stat(
                stat,
                f"sensitivity-falls-with-{'batch' if sweep == 'batch' else 'lr'}",
                f"a larger {what} gives a lower input sensitivity",
                "original",
                f"mean over seeds of −Spearman ρ({what}, sensitivity); 95% CI: Student-t over seeds; "
                f"test: Page's L, seeds as blocks",
                note,
            ).as_dict()
        )
    stat, left, rhos = seedwise_trend(table, "batch", "batch_size", "test_acc", -1)
    out.append(
        Finding.from_stat(
            stat,
            "accuracy-falls-with-batch",
            "a larger batch size gives a lower test accuracy",
            "original",
            "mean over seeds of −Spearman ρ(batch size, test accuracy); 95% CI: Student-t over seeds; "
            "test: Page's L, seeds as blocks",
            (f"{left} seed(s) left out (diverged); " if left else "") + _trend_note(stat, "test accuracy", "falls", rhos),
        ).as_dict()
    )
    ok = [r for r in table if not r["diverged"] and _finite(r["sensitivity"]) and _finite(r["acc_gap"])]
    stat = correlation([r["sensitivity"] for r in ok], [r["acc_gap"] for r in ok])
    n = stat.n
    rho_loss = spearman([r["sensitivity"] for r in ok], [r["loss_gap"] for r in ok]) if len(ok) >= 3 else None
    # models stuck at chance (a dead or saturated network: no gap, no sensitivity) agree with the
    # claim trivially; the note gives rho without them
    learnt = [r for r in ok if r["test_acc"] is not None and r["test_acc"] > CHANCE_MARGIN]
    rho_learnt = spearman([r["sensitivity"] for r in learnt], [r["acc_gap"] for r in learnt]) if len(learnt) >= 3 else None
    seeds = len({r["seed"] for r in ok})
    out.append(
        Finding.from_stat(
            stat,
            "sensitivity-tracks-gap",
            "across the trained models, a higher input sensitivity goes with a larger generalization gap",
            "Novak et al. 2018",
            "Spearman ρ(sensitivity, train accuracy − test accuracy) over all trained models of both sweeps; "
            "95% CI: Fisher z (Bonett–Wright); p: permutation over models",
            (f"{len(table) - n} diverged model(s) left out; " if len(table) > n else "")
            + (
                f"with the loss gap (test − train loss): ρ = {rho_loss:.2f}"
                if rho_loss is not None
                else "no ρ with the loss gap (too few models, or one side constant)"
            )
            + (
                f"; without the {len(ok) - len(learnt)} model(s) at chance (test accuracy ≤ {CHANCE_MARGIN:.0%}): "
                f"ρ = {rho_learnt:.2f} (n = {len(learnt)})"
                if rho_learnt is not None and len(learnt) < len(ok)
                else ""
            )
            + (
                f"; the {n} models come from {seeds} seeds (models of one seed share initialisation and data order: "
                f"not fully independent, so the interval and p are somewhat optimistic)"
                if n >= 4 and seeds < n
                else ""
            ),
        ).as_dict()
    )
    out.append(sharpness_trend_finding(table))
    return out


def sharpness_trend_finding(table: list[dict]) -> dict:
    """Keskar et al.'s claim measured directly: Keskar ε-sharpness rises with the batch size, seed
    by seed, by Page's L (the note gives the same trend for the top eigenvalue and the trace)."""
    stat, left, rhos = seedwise_trend(table, "batch", "batch_size", "keskar", +1)
    if stat.value is None:
        note = "no trend to test"
    else:
        each = f"ρ per seed: {', '.join(f'{r:.2f}' for r in rhos)}; 1 = rises at every step"
        k = sum(r > 0 for r in rhos)
        note = {
            SHOWN: f"Keskar sharpness rises in {k} of {len(rhos)} seeds, consistently enough for Page's test",
            NOT_SHOWN: "Keskar sharpness does not rise: the seeds agree on the opposite order",
        }.get(
            stat.verdict, f"Keskar sharpness rises in {k} of {len(rhos)} seeds: the seeds disagree or the order is within chance"
        ) + f" ({each})"
    also = []
    for key, what in (("top_eigenvalue", "top eigenvalue"), ("trace", "trace")):
        other, _, _ = seedwise_trend(table, "batch", "batch_size", key, +1)
        if other.value is not None:
            also.append(f"{what}: mean ρ {other.value:.2f}, {other.verdict} (n={other.n})")
    note += (f"; {left} seed(s) left out (diverged or not measured)" if left else "") + ("; " + "; ".join(also) if also else "")
    return Finding.from_stat(
        stat,
        "sharpness-rises-with-batch",
        "a larger batch size ends in a sharper minimum",
        "Keskar et al. 2017",
        "mean over seeds of Spearman ρ(batch size, Keskar ε-sharpness of the trained model); "
        "95% CI: Student-t over seeds; test: Page's L, seeds as blocks",
        note,
    ).as_dict()


def summarize(settings: dict, results: dict) -> dict:
    table = rows(settings, results)
    return {
        "epochs": settings["epochs"],
        "min_steps": settings["min_steps"],
        "train_size": settings["train_size"],
        "seeds": settings["seeds"],
        "sensitivity_samples": settings["sensitivity_samples"],
        "sensitivity_definition": "mean over the test images of the Frobenius norm of d(class probabilities)/d(input image)",
        "budget": "each configuration trains >= epochs epochs and >= min_steps optimizer steps (whole epochs), "
        "its StepLR drop at the same fraction of its training; rows give its epochs, steps and final train loss",
        "curvature": curvature.describe(settings),
        "results": table,
        "findings": claims(settings, table),
    }


def metrics(settings: dict, results: dict) -> list[dict]:
    out = []
    for r in results.values():
        for i, (lr, seed) in enumerate(zip(r["lrs"], r["seeds"])):
            base = {"sweep": r["sweep"], "batch_size": r["batch_size"], "lr": lr, "seed": seed}
            for j, e in enumerate(r["epoch"].tolist()):
                out += [{**base, "epoch": e, "metric": k, "value": r[k][j, i].item()} for k in METRICS]
            out.append({**base, "epoch": r["epochs_trained"], "metric": "sensitivity", "value": r["sensitivity"][i].item()})
            out += [
                {**base, "epoch": r["epochs_trained"], "metric": k, "value": v}
                for k, v in curvature.member_fields(r.get("curvature"), i).items()
                if k in curvature.MEASURES and v is not None
            ]
    return out


# --------------------------------------------------------------------------- figures


def config_color(sweep: str, value: float, values: list[float]):
    """One colour per configuration (a batch size, or an lr), ordered along a colour map."""
    from matplotlib import colormaps

    order = sorted(values)
    return colormaps["viridis" if sweep == "batch" else "plasma"](0.85 * order.index(value) / max(len(order) - 1, 1))


def figures(settings: dict, results: dict, fig_dir) -> list[str]:
    plt = pyplot()
    from matplotlib.ticker import NullLocator

    table = rows(settings, results)
    paths = []
    for sweep, xkey, xlabel in (("batch", "batch_size", "batch size"), ("lr", "lr", "learning rate")):
        pts = [r for r in table if r["sweep"] == sweep]
        if not pts:
            continue
        xs = sorted({r[xkey] for r in pts})
        seeds = sorted({r["seed"] for r in pts})

        def runs(key, scale=1.0):  # [seeds, xs]; NaN for a diverged or missing model
            by = {(r["seed"], r[xkey]): r[key] for r in pts}
            return [[scale * by[(s, x)] if _finite(by.get((s, x))) else float("nan") for x in xs] for s in seeds]

        fixed = f"lr {settings['batch_sweep_lr']:g}" if sweep == "batch" else f"batch {settings['lr_sweep_batch_size']}"
        budget = f"≥ {settings['epochs']} epochs and ≥ {settings['min_steps']} steps each"
        sub = f"{settings['model']}, {fixed}, {settings['train_size']:,} training images, {budget}"
        for what in ("loss", "accuracy"):
            fig, ax = plt.subplots(figsize=(6.8, 4.4))
            scale = 100 if what == "accuracy" else 1
            key = "acc" if what == "accuracy" else "loss"
            for split, style in (("train", "o--"), ("test", "s-")):
                plot_median_iqr(ax, xs, runs(f"{split}_{key}", scale), f"{split} {what}", SPLIT_COLORS[split], style)
            if what == "accuracy":
                ref = [(x, REFERENCE["rows"].get(reference_label(sweep, x if sweep == "batch" else 0, x))) for x in xs]
                ref = [(x, 100 * v) for x, v in ref if v is not None]
                if ref:
                    ax.plot(*zip(*ref), "k*", ms=9, label="original test accuracy (full settings)")
            ax.set(
                xscale="log", xlabel=f"{xlabel} (log scale)", ylabel=f"{what} (%)" if what == "accuracy" else "cross-entropy loss"
            )
            ax.set_xticks(xs, [f"{v:g}" for v in xs])  # the swept values themselves
            ax.xaxis.set_minor_locator(NullLocator())
            ax.grid(alpha=0.3, which="both")
            twin = ax.twinx()
            plot_median_iqr(twin, xs, runs("sensitivity"), "sensitivity", SPLIT_COLORS["sensitivity"], "d-")
            samples = settings["sensitivity_samples"]
            twin.set_ylabel(f"sensitivity: mean ‖∂p/∂x‖_F\n({samples} test images)", color="tab:green")
            twin.tick_params(axis="y", colors="tab:green")
            for x in xs:
                k = sum(r["diverged"] for r in pts if r[xkey] == x)
                if k:
                    ax.annotate(
                        f"{k} of {len(seeds)}\ndiverged",
                        (x, 0.5),
                        xycoords=("data", "axes fraction"),
                        ha="center",
                        color="red",
                        fontsize=8,
                    )
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = twin.get_legend_handles_labels()
            # below the axes: twin-axis legends inside the frame end up on some line
            ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
            ax.set_title(f"{what.capitalize()} and sensitivity vs {xlabel} (bands: IQR over seeds)\n{sub}", fontsize=9)
            paths.append(save_fig(fig, fig_dir / f"{key}_vs_{sweep}.png"))
    paths += curvature_figures(settings, table, fig_dir)
    paths.append(gap_figure(settings, table, fig_dir))
    return paths


def curvature_figures(settings: dict, table: list[dict], fig_dir) -> list[str]:
    """Each trained model's curvature against the swept batch size / lr (analysis.measures.curvature_figure):
    median over seeds, IQR band."""
    paths = []
    for sweep, xkey, xlabel in (("batch", "batch_size", "batch size"), ("lr", "lr", "learning rate")):
        pts = [r for r in table if r["sweep"] == sweep]
        if not any(_finite(r.get(k)) for r in pts for k in curvature.MEASURES):
            continue  # not measured (curvature_samples 0, or an older run)
        xs = sorted({r[xkey] for r in pts})
        by = {(r["seed"], r[xkey]): r for r in pts}
        runs = [[by.get((s, x), {}) for x in xs] for s in sorted({r["seed"] for r in pts})]
        fixed = f"lr {settings['batch_sweep_lr']:g}" if sweep == "batch" else f"batch {settings['lr_sweep_batch_size']}"
        fig = curvature.figure(
            settings,
            [("", xs, None, runs)],
            "band",
            f"Curvature of each trained model vs {xlabel} ({settings['model']}, {fixed}; bands: IQR over seeds)\n"
            f"{min(settings['curvature_samples'], settings['train_size'])} training images, eval mode; trace "
            f"{settings['trace_hvp']} HVPs, "
            f"Keskar ε = {settings['keskar_radius']:g}",
            xlabel=f"{xlabel} (log scale)",
        )
        paths.append(save_fig(fig, fig_dir / f"curvature_vs_{sweep}.png"))
    return paths


def gap_figure(settings: dict, table: list[dict], fig_dir) -> str:
    """Novak et al.'s view: sensitivity against the generalization gap, one point per trained model."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for sweep, xkey, name, marker in (("batch", "batch_size", "batch", "o"), ("lr", "lr", "lr", "^")):
        pts = [r for r in table if r["sweep"] == sweep]
        values = sorted({r[xkey] for r in pts})
        for v in values:
            ok = [r for r in pts if r[xkey] == v and _finite(r["sensitivity"]) and _finite(r["acc_gap"])]
            if ok:
                ax.plot(
                    [100 * r["acc_gap"] for r in ok],
                    [r["sensitivity"] for r in ok],
                    marker,
                    ls="none",
                    color=config_color(sweep, v, values),
                    label=f"{name} {v:g} (n={len(ok)})",
                )
    found = next((f for f in claims(settings, table) if f["id"] == "sensitivity-tracks-gap"), None)
    decided = found and found["value"] is not None
    rho = f"Spearman ρ = {found['value']:.2f}, {found['verdict']}" if decided else "ρ: too few models"
    ax.set(xlabel="generalization gap: train − test accuracy (percentage points)", ylabel="sensitivity: mean ‖∂p/∂x‖_F")
    ax.set_title(f"Sensitivity vs generalization gap, one point per model and seed\n{settings['model']}; {rho}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return save_fig(fig, fig_dir / "sensitivity_vs_gap.png")


def reference_label(sweep: str, batch_size, lr) -> str:
    """The REFERENCE row label of one training of a sweep."""
    return f"batch {int(batch_size)}" if sweep == "batch" else f"lr {float(lr):g}"


def ours(summary: dict) -> dict:
    """This run's test accuracy under REFERENCE's row labels: the mean over the seeds that did not
    diverge, per batch size / lr (noted where some did)."""
    acc: dict = {}
    for r in summary.get("results") or []:
        if isinstance(r, dict) and r.get("sweep") in ("batch", "lr") and _finite(r.get("batch_size")) and _finite(r.get("lr")):
            acc.setdefault(reference_label(r["sweep"], r["batch_size"], r["lr"]), []).append(r.get("test_acc"))
    out: dict = {}
    for label, values in acc.items():
        ok = [v for v in values if _finite(v)]
        mean = sum(ok) / len(ok) if ok else None
        out[label] = (
            mean
            if len(ok) == len(values)
            else {"value": mean, "note": f"{len(values) - len(ok)} of {len(values)} seeds diverged"}
        )
    return out
