"""2. cifar-depth: deep vs shallow CNNs on CIFAR-10 (cnn-1, cnn-2, cnn-7).

The three architectures differ, so each is its own trial; the seeds of one model train together
as one ensemble. Every model gets the same data, epochs and batch size, and the same seeds, so the
comparison is paired by seed. Train metrics come from a separate evaluation pass over the
un-augmented training set.
"""

from __future__ import annotations

import math

import numpy as np

from .. import findings as fd
from ._base import Trial, finished_models, model_color, pyplot, save_fig, trial_per_model
from ._cifar import (
    BAND,
    CIFAR_NON_NEGATIVE,
    CIFAR_POSITIVE,
    CIFAR_WORK,
    COMMON,
    METRICS,
    median_band,
    median_over_seeds,
    per_model_table,
    seed_rows,
    train_model,
    validate_models_and_sizes,
)

NAME = "cifar-depth"
TITLE = "Deep vs shallow CNNs on CIFAR-10"

# --- for the report and the progress display (see _base.py)
COST = 47  # its share of `run all` (quick, default executor, 2 idle cores; bench/study_time.py, 2026-12-06) in seconds
LOOK_FOR = (
    "whether the deeper CNNs (cnn-2, cnn-7) end ahead of the one-layer cnn-1 seed by seed, as the original "
    "found (findings deeper-is-better, cnn-2-over-cnn-1, cnn-7-over-cnn-2: differences of test accuracy paired "
    "by seed), and whether the curves have flattened by the last epoch, so that the ordering is that of "
    "trained models. Compare accuracies rather than losses: cnn-1's Softmax output fed into cross-entropy "
    "keeps its loss above about 1.46 whatever it learns (see the differences at the end). A lead is judged by the "
    "Student-t interval of its mean over seeds: with the 3 seeds of the quick profile that shows only a mean lead "
    "above about 2.5 standard deviations of the per-seed leads (1.24 with the 5 seeds at full), so a real but "
    "noisy lead comes out inconclusive, and the note says what this run could have shown. Whether loss and "
    "accuracy rank the models alike is judged by Page's test over seeds, which 3 seeds that all agree pass "
    "(p = 0.005)."
)
CAPTIONS = {
    "curves.png": "Train (dashed) and test (solid) loss and accuracy against epoch for each CNN: the median over "
    "seeds with the seeds' interquartile range as a band, n seeds in the legend; diamonds: the original's test "
    "loss and accuracy at epoch 100 with the full settings, drawn at the right edge when this run is shorter "
    "(the original's Figs 7 and 8).",
    "table.png": "The final train and test loss and accuracy of each CNN, the median over seeds (the original's "
    "table of final values).",
}
REFERENCE = {  # the original study's numbers at epoch 100 (SPEC)
    "what": "test loss and accuracy after the last epoch",
    "original": "epoch 100 (the original write-up's table says 1.924 / 54.36%, 0.966 / 65.85%, "
    "0.9532 / 73.57% for cnn-1 / cnn-2 / cnn-7)",
    "kind": None,  # per row: accuracy rows as accuracies, the others as losses
    "rows": {
        "cnn-1 test loss": 1.8815,
        "cnn-1 test accuracy": 0.5873,
        "cnn-2 test loss": 0.8913,
        "cnn-2 test accuracy": 0.6870,
        "cnn-7 test loss": 0.6874,
        "cnn-7 test accuracy": 0.7681,
    },
}
DIFFERENCES = [
    (
        "cnn-1's Softmax fed into cross-entropy (experiments 2, 8, 9)",
        "cnn-1 ends in Softmax, and cross-entropy applies log-softmax again on those probabilities. The "
        "loss cannot fall below log(e + 9) − 1 ≈ 1.461 and its gradients are small, so cnn-1 learns slowly "
        "and its losses are not comparable to the other models'.",
        "Kept so results compare; it explains most of cnn-1's high loss in the original too.",
    ),
    (
        "cnn-7's missing activation (experiment 2)",
        "cnn-7 has no activation between Linear(4096, 100) and Linear(100, 10): together they compute one "
        "linear map from 4096 to 10 values, so their 410k parameters express nothing that a single "
        "Linear(4096, 10) (41k parameters) could not; they change only how training proceeds.",
        "Kept so results compare.",
    ),
]

_FULL = {
    "models": ["cnn-1", "cnn-2", "cnn-7"],
    "epochs": 100,
    "batch_size": 64,
    **COMMON,
    "seeds": 5,  # quick: 3 (Page's test decides an ordering of 3 models from 3 seeds that agree: p = 0.005)
    "eval_every": 1,  # epochs between evaluation passes (the last epoch is always evaluated)
}
# --- what the settings mean (see _base.py): which measure work (the time estimate), which must be positive
WORK_SETTINGS, NON_NEGATIVE_SETTINGS = CIFAR_WORK, CIFAR_NON_NEGATIVE
POSITIVE_SETTINGS = CIFAR_POSITIVE
PROFILES = {
    "smoke": {**_FULL, "epochs": 2, "lr_step": 1, "train_size": 600, "test_size": 300, "seeds": 2},
    # 3 seeds at about the cost of one seed before: 5,000 images (was 8,000), evaluated every 2nd
    # epoch. SPEC's schedule in short: 10 epochs, lr 1e-3 then 1e-4 after epoch 5, so the curves
    # flatten as they do after SPEC's lr steps; every model gets the same images, epochs and seeds.
    "quick": {
        **_FULL,
        "epochs": 10,
        "lr_step": 5,
        "lr": 1e-3,
        "train_size": 5000,
        "test_size": 2000,
        "eval_every": 2,
        "seeds": 3,
    },
    "full": _FULL,
}

REFERENCE_EPOCH = 100  # the epoch of REFERENCE's numbers


def original(model: str) -> tuple[float, float] | None:
    """The original's (test loss, test accuracy) of a model at epoch 100, or None."""
    rows = REFERENCE["rows"]
    if f"{model} test loss" not in rows:
        return None
    return rows[f"{model} test loss"], rows[f"{model} test accuracy"]


validate = validate_models_and_sizes


def trials(settings: dict) -> list[Trial]:
    return trial_per_model(settings, train_model, weigh_by_params=True)


# --------------------------------------------------------------------------- claims


def _by_seed(rows: list[dict], model: str, key: str = "test_acc") -> dict:
    """seed -> value of one model (diverged seeds, with value None, left out)."""
    return {r["seed"]: r[key] for r in rows if r["model"] == model and r.get(key) is not None}


def _paired(rows: list[dict], better: str, worse: str) -> dict:
    """seed -> test accuracy of `better` minus that of `worse`, in percentage points (seeds where
    both have a value)."""
    a, b = _by_seed(rows, better), _by_seed(rows, worse)
    return {s: 100 * (a[s] - b[s]) for s in sorted(a.keys() & b.keys())}


def _ahead(diffs: list[float], n_seeds: int) -> str:
    lost = n_seeds - len(diffs)
    return f"ahead in {sum(d > 0 for d in diffs)} of {len(diffs)} seeds" + (
        f" ({lost} seeds without a pair: diverged or missing)" if lost else ""
    )


def _why(verdict: str, n: int) -> str:
    """Why this verdict, beside the Stat's own reason (appended to an inconclusive one)."""
    if n == 0:
        return "; nothing to compare: every pair has a diverged or missing side"
    return "; the interval lies wholly below 0" if verdict == fd.NOT_SHOWN else ""


def _still_learning(rows: list[dict], models) -> str:
    """A note on the budget: the models whose median train loss still fell by more than 1% over
    their last evaluation interval (longer training might then change the comparison)."""
    notes = []
    for m in models:
        mine = [r for r in rows if r["model"] == m and r.get("train_loss_drop") is not None and r.get("train_loss")]
        if mine:
            drop = float(np.median([r["train_loss_drop"] for r in mine]))
            if drop > 0.01 * float(np.median([r["train_loss"] for r in mine])):
                notes.append(f"{m}'s train loss still fell by {drop:.3f} over its last {mine[0]['drop_epochs']} epochs")
    return "; " + ", ".join(notes) + ": a longer training might decide" if notes else ""


def claims(rows: list[dict]) -> list[dict]:
    """The original's claims about this experiment, judged from the per-seed results rows
    (model, seed, test_acc, test_loss) alone. A lead of one model over another is a difference
    paired by seed (findings.greater: Student-t interval over seeds, and from 6 seeds the exact
    sign-flip test too); that loss and accuracy rank the models alike is a trend within each seed
    (findings.trend: Page's L, exact, seeds as blocks)."""
    n_seeds = len({r["seed"] for r in rows})
    out = []

    # deeper/larger is better: both multi-layer CNNs ahead of cnn-1, seed by seed
    d2, d7 = _paired(rows, "cnn-2", "cnn-1"), _paired(rows, "cnn-7", "cnn-1")
    both = [min(d2[s], d7[s]) for s in sorted(d2.keys() & d7.keys())]
    stat = fd.greater(both)
    out.append(
        fd.Finding.from_stat(
            stat,
            "deeper-is-better",
            "The deeper/larger CNNs (cnn-2, cnn-7) reach a higher test accuracy than the one-layer cnn-1.",
            "original",
            "mean over seeds of min(acc(cnn-2), acc(cnn-7)) − acc(cnn-1), test accuracy in points, paired by seed",
            "both deeper CNNs "
            + _ahead(both, n_seeds)
            + _why(stat.verdict, stat.n)
            + (_still_learning(rows, ("cnn-1", "cnn-2", "cnn-7")) if stat.verdict == fd.INCONCLUSIVE else ""),
        ).as_dict()
    )

    for better, worse, claim in (
        ("cnn-2", "cnn-1", "cnn-2 (five conv layers) reaches a higher test accuracy than cnn-1 (one)."),
        ("cnn-7", "cnn-2", "cnn-7 (430k parameters) reaches a higher test accuracy than cnn-2 (47k): the original's ordering."),
    ):
        diffs = list(_paired(rows, better, worse).values())
        stat = fd.greater(diffs)
        out.append(
            fd.Finding.from_stat(
                stat,
                f"{better}-over-{worse}",
                claim,
                "original",
                f"mean over seeds of acc({better}) − acc({worse}), test accuracy in points, paired by seed",
                f"{better} "
                + _ahead(diffs, n_seeds)
                + _why(stat.verdict, stat.n)
                + (_still_learning(rows, (better, worse)) if stat.verdict == fd.INCONCLUSIVE else ""),
            ).as_dict()
        )

    # the original's ordering as one claim: cnn-1 < cnn-2 < cnn-7 in test accuracy within each seed
    # (Page's L, seeds as blocks: an order kept in all of 3 seeds gives p = 1/216); seeds where a
    # model has no accuracy are left out
    order = ("cnn-1", "cnn-2", "cnn-7")
    acc = {(r["model"], r["seed"]): r.get("test_acc") for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    ranked = [[acc.get((m, s)) for m in order] for s in seeds]
    ranked = [ys for ys in ranked if all(isinstance(y, (int, float)) and math.isfinite(y) for y in ys)]
    stat = (
        fd.trend(range(len(order)), ranked, +1)
        if ranked
        else fd.Stat(
            None,
            None,
            fd.INCONCLUSIVE,
            0,
            test="page-L",
            sample={"x": [], "y": [], "sign": 1, "margin": 0.0},
            reason="no seed with a test accuracy for all three models",
        )
    )
    kept = sum(ys[0] < ys[1] < ys[2] for ys in ranked)
    out.append(
        fd.Finding.from_stat(
            stat,
            "depth-ordering",
            "Test accuracy ranks the models cnn-1 < cnn-2 < cnn-7, seed by seed (the original's order).",
            "original",
            "mean over seeds of Spearman's rho between the order cnn-1, cnn-2, cnn-7 and test accuracy; Page's L "
            "(exact, seeds as blocks)",
            f"the full order holds in {kept} of {len(ranked)} seeds"
            + (
                f"; {len(seeds) - len(ranked)} seed(s) left out (a model diverged or missing)" if len(ranked) < len(seeds) else ""
            ),
        ).as_dict()
    )

    # lowest loss goes with highest accuracy: within each seed, the models ordered by falling test
    # loss (x = 0, 1, 2: highest loss first) should rise in test accuracy; Page's L over the seeds.
    # A seed where some model has no value (diverged) is left out.
    models = sorted({r["model"] for r in rows})
    per_seed, rhos, left = [], [], 0
    for s in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == s and r.get("test_loss") is not None and r.get("test_acc") is not None]
        if len(mine) < 3 or len(mine) < len(models):
            left += 1
            continue
        mine.sort(key=lambda r: -r["test_loss"])
        per_seed.append([r["test_acc"] for r in mine])
        rhos.append(fd.spearman([-r["test_loss"] for r in mine], [r["test_acc"] for r in mine]))
    claim = "Across the models, the lower the test loss, the higher the test accuracy."
    statistic = (
        "mean over seeds of Spearman's rho between −(test loss) and test accuracy across the models; Page's L "
        "(exact, seeds as blocks) of the accuracies with the models ordered by falling test loss in each seed"
    )
    if per_seed:
        stat = fd.trend(range(len(per_seed[0])), per_seed, +1)
    else:
        stat = fd.Stat(
            None,
            None,
            fd.INCONCLUSIVE,
            0,
            test="page-L",
            sample={"x": [], "y": [], "sign": 1, "margin": 0.0},
            reason="no seed with a test loss and accuracy for every model",
        )
    note = (
        f"rho = 1 (same order) in {sum(r == 1 for r in rhos)} of {len(rhos)} seeds"
        + (f"; {left} seed(s) left out (a model diverged or missing)" if left else "")
        + ("; the seeds rank the models in opposite orders by loss and by accuracy" if stat.verdict == fd.NOT_SHOWN else "")
    )
    out.append(fd.Finding.from_stat(stat, "lowest-loss-highest-accuracy", claim, "original", statistic, note).as_dict())
    return out


# --------------------------------------------------------------------------- outputs


def seed_results(settings: dict, results: dict) -> list[dict]:
    """One row per (model, seed): final metrics and where its training ended."""
    rows = []
    for m, r in finished_models(settings, results):
        rows += seed_rows(r, settings["train_size"], settings["batch_size"], model=m, params=r["params"])
    return rows


def summarize(settings: dict, results: dict) -> dict:
    # one row per model and seed; the report draws their medians per model (no second table here)
    rows = seed_results(settings, results)
    return {"results": rows, "findings": claims(rows)}


def metrics(settings: dict, results: dict) -> list[dict]:
    rows = []
    for m, r in finished_models(settings, results):
        for i, seed in enumerate(r["seeds"]):
            for k in METRICS:
                for e, v in zip(r["epoch"].tolist(), r[k][:, i].tolist()):
                    rows.append({"model": m, "seed": seed, "epoch": e, "metric": k, "value": v})
    return rows


def figures(settings: dict, results: dict, fig_dir) -> list[str]:
    plt = pyplot()
    from matplotlib.transforms import blended_transform_factory

    done = finished_models(settings, results)
    n_seeds = max((len(r["seeds"]) for _, r in done), default=0)
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    for m, r in done:
        for split, style in (("train", "--"), ("test", "-")):
            x = r["epoch"].numpy()
            median_band(ax_l, x, r[f"{split}_loss"], model_color(m), f"{m} {split}", style, r["diverged"])
            median_band(ax_a, x, 100 * r[f"{split}_acc"], model_color(m), f"{m} {split}", style, r["diverged"])
    # the original's test numbers at epoch 100: at that epoch when this run has it, else as
    # markers just right of the axes (a level to compare with, not a point on these curves)
    at_100 = settings["epochs"] >= REFERENCE_EPOCH
    where = "" if at_100 else " (drawn at the right edge)"
    for ax, idx, scale in ((ax_l, 0, 1), (ax_a, 1, 100)):
        tr = ax.transData if at_100 else blended_transform_factory(ax.transAxes, ax.transData)
        first = True
        for m, _ in done:
            if original(m):
                ax.plot(
                    [REFERENCE_EPOCH if at_100 else 1.015],
                    [scale * original(m)[idx]],
                    "D",
                    color=model_color(m),
                    mec="k",
                    ms=7,
                    transform=tr,
                    clip_on=False,
                    zorder=5,
                    label=f"original (full settings), test at epoch {REFERENCE_EPOCH}{where}" if first else None,
                )
                first = False
    band = f"lines: median over seeds, band: {BAND} over seeds"
    ax_l.set(xlabel="epoch", ylabel="cross-entropy loss", title=f"Loss (dashed: train, solid: test)\n{band}")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title=f"Accuracy (dashed: train, solid: test)\n{band}")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))  # below: the curves stay visible
    fig.suptitle(
        f"{settings['epochs']} epochs, batch {settings['batch_size']}, {settings['train_size']:,} training / "
        f"{settings['test_size']:,} test images, "
        f"{n_seeds} seeds per model",
        fontsize=10,
    )
    path = save_fig(fig, fig_dir / "curves.png")

    # the table of final values as a figure too, for the report: medians over seeds
    rows = per_model_table(seed_results(settings, results), settings["models"], keys=METRICS + ("final_batch_loss",))
    for t in rows:
        if original(t["model"]):
            t["original_test_loss"], t["original_test_acc"] = original(t["model"])
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.35 * len(rows)))
    ax.axis("off")

    def pct(v):
        return "—" if v is None else f"{100 * v:.2f}%"

    def num(v):
        return "—" if v is None else f"{v:.4f}"

    cells = [
        [
            r["model"],
            f"{r['params']:,}",
            f"{r['n']}" + (f" (+{r['diverged']} diverged)" if r["diverged"] else ""),
            num(r["train_loss_median"]),
            num(r["test_loss_median"]),
            pct(r["train_acc_median"]),
            pct(r["test_acc_median"]),
        ]
        for r in rows
    ]
    table = ax.table(
        cellText=cells, colLabels=["model", "params", "seeds", "train loss", "test loss", "train acc", "test acc"], loc="center"
    )
    table.scale(1, 1.3)
    ax.set_title(f"Final values after {settings['epochs']} epochs: median over seeds")
    return [path, save_fig(fig, fig_dir / "table.png")]


def ours(summary: dict) -> dict:
    """This run's test loss and accuracy under REFERENCE's row labels: the median over seeds per model."""
    rows = [r for r in summary.get("results") or [] if isinstance(r, dict)]
    out = {}
    for m in dict.fromkeys(r.get("model") for r in rows):
        for key, what in (("test_loss", "test loss"), ("test_acc", "test accuracy")):
            out[f"{m} {what}"] = median_over_seeds(rows, m, key)
    return out
