"""7. param-count: number of parameters vs generalization, cnn-21 ... cnn-31 on CIFAR-10.

The eleven architectures differ, so each is its own trial.
"""

from __future__ import annotations

from .. import findings as fd
from .. import models
from ._base import Trial, finished_models, model_color, pyplot, save_fig, trial_per_model
from ._cifar import (
    BAND,
    CIFAR_NON_NEGATIVE,
    CIFAR_POSITIVE,
    CIFAR_WORK,
    COMMON,
    METRICS,
    median_over_seeds,
    per_model_table,
    seed_rows,
    train_model,
    validate_models_and_sizes,
)

NAME = "param-count"
TITLE = "Number of parameters vs generalization (cnn-21 ... cnn-31)"

# --- for the report and the progress display (see _base.py)
COST = 81  # its share of `run all` (quick, default executor, 2 idle cores; bench/study_time.py, 2026-12-06) in seconds
LOOK_FOR = (
    "whether, seed by seed, test accuracy rises and test loss falls with the number of parameters, as the "
    "original found (findings more-params-better and more-params-lower-loss), and whether the train − test "
    "accuracy gap grows with it (gap-grows-with-params). Each is Page's trend test over the models with the "
    "seeds as blocks: shown only where the models fall in the claimed order consistently across seeds (with "
    "3 seeds and 6 models a mean Spearman ρ of about 0.5 is needed; the note gives each seed's ρ). Every model gets the same "
    "images, epochs and seeds. The diamonds are the "
    "original's test accuracies of cnn-21 and cnn-31 after 5 epochs on all 50,000 images: a level for "
    "the full profile, not for a run on a subset."
)
CAPTIONS = {
    "params.png": "Train and test loss, accuracy and the train − test accuracy gap against the number of "
    "parameters (log scale), one model cnn-21 … cnn-31 per position: the median over seeds with the seeds' "
    "interquartile range as a band, each seed a dot in its model's colour; diamonds: the original's test accuracy "
    "with the full settings (the original's Figs 15 and 16).",
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
    "seeds": 5,  # per model, trained as one ensemble (full: 5 seeds for the trends; quick keeps 3)
}
# --- what the settings mean (see _base.py): which measure work (the time estimate), which must be positive
WORK_SETTINGS, NON_NEGATIVE_SETTINGS = CIFAR_WORK, CIFAR_NON_NEGATIVE
POSITIVE_SETTINGS = CIFAR_POSITIVE
PROFILES = {
    "smoke": {**_FULL, "models": ["cnn-21", "cnn-25", "cnn-30"], "epochs": 1, "train_size": 256, "test_size": 128, "seeds": 2},
    # SPEC's 5 epochs, on 3,000 images (3 seeds at about the cost of one seed on 6,000 before).
    # At batch 512 that would be 30 steps, too few to tell the models apart; batch 64 and lr 1e-3
    # give 235 steps, the same for every model. Train/test evaluated after the last epoch only.
    # Six of the eleven models, spread evenly on the log parameter axis (11k, 17k, 29k, 52k, 130k,
    # 425k): each trains exactly as before, the trend is drawn through fewer points.
    "quick": {
        **_FULL,
        "models": ["cnn-21", "cnn-24", "cnn-25", "cnn-26", "cnn-30", "cnn-31"],
        "epochs": 5,
        "batch_size": 64,
        "lr": 1e-3,
        "train_size": 3000,
        "test_size": 2000,
        "eval_every": 5,
        "seeds": 3,
    },
    "full": _FULL,
}


validate = validate_models_and_sizes


# --------------------------------------------------------------------------- trials


def trials(settings: dict) -> list[Trial]:
    return trial_per_model(settings, train_model, weigh_by_params=True)


# --------------------------------------------------------------------------- claims


def _per_seed(rows: list[dict], key: str) -> dict:
    """{seed: {params: value}} of the rows with a finite `key` (a diverged cell has None)."""
    per_seed: dict = {}
    for r in rows:
        v = r.get(key)
        if v is not None and v == v:
            per_seed.setdefault(r["seed"], {})[r["params"]] = v
    return per_seed


def _trend(rows: list[dict], key: str, sign: int) -> tuple[fd.Stat, dict]:
    """The trend of rows' `key` with parameter count, seed by seed: Page's L test, exact, seeds as
    blocks (findings.trend), over the models every used seed has a result for. A seed with fewer
    than 3 models with a result is left out first (diverged or missing cells are not numbers);
    a model missing in some other seed is then left out of every seed. Returns the Stat and what
    was left out, for the note."""
    per_seed = _per_seed(rows, key)
    used = {s: pts for s, pts in sorted(per_seed.items()) if len(pts) >= 3}
    all_seeds = {r["seed"] for r in rows}
    common = sorted(set.intersection(*(set(p) for p in used.values()))) if used else []
    every = sorted({r["params"] for r in rows})
    left = {"seeds": len(all_seeds) - len(used), "models": len(every) - len(common) if used else 0}
    if len(common) < 3:
        stat = fd.Stat(
            None,
            None,
            fd.INCONCLUSIVE,
            len(used),
            test="page-L",
            sample={"x": [float(x) for x in common], "y": [], "sign": sign, "margin": 0.0},
            reason="fewer than 3 models with a result in every seed"
            if used
            else "no seed has 3 models with a result (diverged or missing)",
        )
        return stat, left
    return fd.trend(common, [[pts[x] for x in common] for pts in used.values()], sign), left


def _count_note(stat: fd.Stat, left: dict, rising: str) -> str:
    """Which seeds go the claimed way, and what was left out."""
    s = stat.sample or {}
    x, ys = s.get("x") or [], s.get("y") or []
    rhos = [fd.spearman(x, y) for y in ys]
    k = sum(rho is not None and s["sign"] * rho > 0 for rho in rhos)
    parts = [f"{rising} in {k} of {len(rhos)} seeds (ρ > 0), over {len(x)} models" if rhos else ""]
    if rhos:
        parts.append("per-seed ρ: " + ", ".join("—" if r is None else f"{s['sign'] * r:.2f}" for r in rhos))
    if left["seeds"]:
        parts.append(f"{left['seeds']} seed(s) left out (fewer than 3 models with a result)")
    if left["models"]:
        parts.append(f"{left['models']} model(s) left out (no result in some seed)")
    if stat.verdict == fd.NOT_SHOWN:
        parts.append("the seeds agree against the claim")
    return "; ".join(p for p in parts if p)


def claims(rows: list[dict]) -> list[dict]:
    """The original's claims, judged from the per-seed results rows (model, params, seed,
    train_acc, test_acc, test_loss) alone. Each is a monotone trend over the models, seed by seed:
    Page's L (exact, seeds as blocks; shown at one-sided p <= 2.5%), with the mean per-seed
    Spearman rho and its t-interval over seeds as the effect size."""
    for r in rows:  # the generalization gap of each (model, seed)
        ok = r.get("train_acc") is not None and r.get("test_acc") is not None
        r["gap"] = r["train_acc"] - r["test_acc"] if ok else None
    out = []
    for fid, claim, key, sign, stat, rising in (
        (
            "more-params-better",
            "More parameters, higher test accuracy.",
            "test_acc",
            1,
            "mean over seeds of Spearman's ρ(parameters, test accuracy) across the models; test: Page's L, seeds as blocks",
            "accuracy rises",
        ),
        (
            "more-params-lower-loss",
            "More parameters, lower test loss.",
            "test_loss",
            -1,
            "mean over seeds of −Spearman's ρ(parameters, test loss) across the models; test: Page's L, seeds as blocks",
            "loss falls",
        ),
        (
            "gap-grows-with-params",
            "The generalization gap (train − test accuracy) grows with the number of parameters.",
            "gap",
            1,
            "mean over seeds of Spearman's ρ(parameters, train − test accuracy) across the models; test: Page's L, seeds as "
            "blocks",
            "gap rises",
        ),
    ):
        s, left = _trend(rows, key, sign)
        out.append(fd.Finding.from_stat(s, fid, claim, "original", stat, _count_note(s, left, rising)).as_dict())
    return out


# --------------------------------------------------------------------------- outputs


def summarize(settings: dict, results: dict) -> dict:
    rows = []
    for m, r in finished_models(settings, results):
        rows += seed_rows(r, settings["train_size"], settings["batch_size"], model=m, params=r["params"])
    found = claims(rows)  # adds each row's "gap"
    # one row per model and seed; the report draws their medians per model (no second table here)
    return {
        "epochs": settings["epochs"],
        "train_size": settings["train_size"],
        "test_size": settings["test_size"],
        "results": rows,
        "findings": found,
    }


def metrics(settings: dict, results: dict) -> list[dict]:
    rows = []
    for m, r in finished_models(settings, results):
        for i, seed in enumerate(r["seeds"]):
            base = {"model": m, "params": r["params"], "seed": seed}
            for j, e in enumerate(r["epoch"].tolist()):
                rows += [{**base, "epoch": e, "metric": k, "value": r[k][j, i].item()} for k in METRICS]
            rows += [
                {**base, "epoch": e + 1, "metric": "batch_loss", "value": v} for e, v in enumerate(r["batch_loss"][:, i].tolist())
            ]
    return rows


def figures(settings: dict, results: dict, fig_dir) -> list[str]:
    plt = pyplot()
    import numpy as np
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    summary = summarize(settings, results)
    table = sorted(per_model_table(summary["results"], settings["models"], keys=METRICS + ("gap",)), key=lambda t: t["params"])
    if not table:
        return []
    rows = summary["results"]
    params = [t["params"] for t in table]
    n_seeds = max(t["n"] + t["diverged"] for t in table)

    def by_model(key: str, scale: float = 1.0) -> list[list[float]]:
        """Per model (in parameter order): the finite values of its seeds."""
        return [[scale * r[key] for r in rows if r["model"] == t["model"] and r.get(key) is not None] for t in table]

    def curve(ax, key, scale, style, color, label):
        vals = by_model(key, scale)
        have = [i for i, v in enumerate(vals) if v]
        x = [params[i] for i in have]
        lo, med, hi = (np.array([np.quantile(vals[i], q) for i in have]) for q in (0.25, 0.5, 0.75))
        ns = sorted({len(vals[i]) for i in have}) or [0]
        n_txt = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}–{ns[-1]}"
        ax.plot(x, med, style, color=color, lw=1.2, ms=0, label=f"{label}: median ({n_txt} seeds per model)")
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
        for i in have:  # each seed as a dot in its model's colour
            ax.plot(
                [params[i]] * len(vals[i]),
                vals[i],
                style[0] if style[0] in "os^" else "o",
                color=model_color(table[i]["model"]),
                ms=4,
                mec=color,
                mew=0.6,
                alpha=0.9,
                ls="none",
            )

    fig, (ax_l, ax_a, ax_g) = plt.subplots(1, 3, figsize=(16, 4.8), layout="constrained")
    for split, style, color in (("train", "o--", "0.45"), ("test", "s-", "k")):
        curve(ax_l, f"{split}_loss", 1, style, color, split)
        curve(ax_a, f"{split}_acc", 100, style, color, split)
    curve(ax_g, "gap", 100, "o-", "tab:red", "train − test")
    # the original's test accuracy after 5 epochs on all 50,000 images (SPEC), at its two ends
    ref = [
        (t["params"], 100 * REFERENCE["rows"][f"{t['model']} test accuracy"])
        for t in table
        if f"{t['model']} test accuracy" in REFERENCE["rows"]
    ]
    if ref:
        ax_a.plot(
            *zip(*ref),
            "D",
            color="tab:orange",
            mec="k",
            ms=8,
            ls="none",
            zorder=5,
            label="original (full settings: 5 epochs, batch 512, 50,000 images), test",
        )
    sub = (
        f"{settings['epochs']} epochs, batch {settings['batch_size']}, {settings['train_size']:,} training images, "
        f"{n_seeds} seeds per model"
    )
    ax_l.set(ylabel="cross-entropy loss", title="Loss vs parameters")
    ax_a.set(ylabel="accuracy (%)", title="Accuracy vs parameters")
    ax_g.set(ylabel="train − test accuracy (points)", title="Generalization gap vs parameters")
    for ax in (ax_l, ax_a, ax_g):
        # fixed limits: with every seed diverged there is no data to scale a log axis by
        ax.set(xscale="log", xlabel="parameters (log scale)", xlim=(min(params) / 1.5, max(params) * 1.5))
        top = ax.secondary_xaxis("top")  # name each point by its model number (after the log scale is set, which resets it)
        top.xaxis.set_major_locator(FixedLocator(params))
        top.xaxis.set_major_formatter(FixedFormatter([t["model"].removeprefix("cnn-") for t in table]))
        top.xaxis.set_minor_locator(NullLocator())
        top.tick_params(labelsize=7, labelrotation=90)
        top.set_xlabel("model cnn-N", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{sub}\nlines: median over seeds, band: {BAND} over seeds; dots: single seeds in each model's colour", fontsize=10
    )
    return [save_fig(fig, fig_dir / "params.png")]


def ours(summary: dict) -> dict:
    """This run's test accuracy under REFERENCE's row labels: the median over seeds per model."""
    rows = [r for r in summary.get("results") or [] if isinstance(r, dict)]
    return {f"{m} test accuracy": median_over_seeds(rows, m, "test_acc") for m in dict.fromkeys(r.get("model") for r in rows)}
