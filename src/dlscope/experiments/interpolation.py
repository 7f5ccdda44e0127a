"""8. interpolation: loss, accuracy and sensitivity along the line between two trained cnn-1s.

Pair "batch": batch 64 vs batch 1024 at one lr. Pair "lr": lr 1e-3 vs 1e-2 at one batch size.
Each pair is one trial that trains `seeds` replicates of its two models and then walks the line
theta(alpha) of every replicate. The lr pair's models have the same shapes and batch size, so all
2 x seeds train as one ensemble with a learning rate per member; the batch pair's two sides
cannot (their steps differ), so each side's seeds train as one ensemble, one side after the
other, both inside the trial's one checkpoint file. Budgets are fair (cifar.side_budget):
each side trains at least `epochs` epochs and at least `min_steps` optimizer steps.

Sharpness of an end: how much the train loss rises when one steps outward from it along the line
by `sharpness_delta` (alpha = -delta for a, 1 + delta for b): the same direction and distance for
both ends, so the two ends of one replicate compare directly (Keskar et al. 2017, Fig. 3).

With shared_init both models start from one initialisation (Keskar et al.); otherwise from two
(Goodfellow et al., and the original study). The seed also drives the data order, so a shared
initialisation shares the shuffle too.
"""

from __future__ import annotations

import math

from .. import models
from ..analysis.interpolation import alpha_grid, evaluate, evaluate_path
from ..data import balanced_subset
from ..findings import INCONCLUSIVE, NOT_SHOWN, SHOWN, Finding, Stat, finite_or_none, greater
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

NAME = "interpolation"
TITLE = "Flatness 1: linear interpolation between two trained models"

# --- for the report and the progress display (see _base.py)
COST = 64  # its share of `run all` (quick, default executor, 2 idle cores; bench/study_time.py, 2026-12-06) in seconds
LOOK_FOR = (
    "whether the large-batch end is sharper: Keskar et al. (2017) find large-batch minima sharper, and by the "
    "same noise argument a larger learning rate should end flatter. `large-batch-sharper` and `large-lr-flatter` "
    "measure it directly, as Keskar et al. did: the ε-sharpness of each trained end, paired by replicate (the "
    "curvature figure, with the top Hessian eigenvalue and the trace beside it; the note says whether those "
    "agree). `large-batch-line-sharper` and `large-lr-line-flatter` ask the same of the line: how steeply the "
    "train loss rises at the same distance outward from the two ends of each replicate; `barrier` asks whether test accuracy "
    "dips between the two models, as the original's did (27% near α ≈ 0.6). Each is a difference paired by "
    "replicate, judged by the Student-t 95% interval of its mean: with 3 replicates only a mean above about "
    "2.5 standard deviations of the per-replicate differences can be shown, so a real but modest effect comes "
    "out inconclusive (each note gives the smallest difference this run could have shown). Each side trained at least "
    "`min_steps` optimizer steps, the large batch for more epochs (the figure's title gives each side's "
    "steps and final train loss), so no end is compared half-trained. The loss axis is linear: cnn-1's "
    "Softmax output bounds its cross-entropy to [1.46, 2.46]. With independent initialisations the two "
    "ends lie far apart, so the outward step is long and the rise measures the line's shape more than "
    "the curvature at the minimum."
)
CAPTIONS = {
    "pair_batch.png": "Train and test loss, accuracy and input sensitivity along the line θ(α) = (1−α)·θa + α·θb "
    "from the small-batch model (α = 0) to the large-batch one (α = 1) and beyond: the median over replicates "
    "with the interquartile range as a band; stars: the original's test accuracies at full settings (57.7% at "
    "α = 0, 52.6% at α = 1, 27% near α = 0.6) (the original's Fig 19).",
    "curvature.png": "The curvature of each trained end, measured directly as Keskar et al. did: top Hessian eigenvalue, "
    "Hessian trace (Hutch++) and Keskar ε-sharpness of the training loss on a fixed subset of training images, eval "
    "mode; a grey line joins the two ends of one replicate, dots: the median over replicates with the interquartile "
    "range, n in the legend. `large-batch-sharper` and `large-lr-flatter` test the Keskar panel replicate by replicate.",
    "pair_lr.png": "The same along the line from the model trained at the smaller learning rate (α = 0) to the one "
    "at the larger (α = 1), median over replicates with the interquartile range (the original's Fig 22).",
}
REFERENCE = {
    "what": "pair A (batch 64 vs batch 1024): test accuracy at the two ends and at the barrier between them",
    "original": "after 25 epochs; barrier near α ≈ 0.6",
    "kind": "acc",
    "rows": {"test accuracy at α = 0": 0.577, "test accuracy at α = 1": 0.526, "lowest test accuracy for 0 < α < 1": 0.27},
}

_FULL = {
    "model": "cnn-1",
    "pairs": ["batch", "lr"],
    "seeds": 5,  # replicates of each pair: replicate k trains a from seed + 2k and b from seed + 2k + 1 (quick: 3)
    "epochs": 25,
    "min_steps": 300,  # every side >= this many optimizer steps (full: 25 epochs already give >= 1,225)
    "batch_sizes": [64, 1024],  # pair "batch"
    "batch_pair_lr": 4e-4,
    "lrs": [1e-3, 1e-2],  # pair "lr"
    "lr_pair_batch_size": 512,
    **{k: v for k, v in COMMON.items() if k != "lr"},  # the lr is what the pairs/sweeps set
    "alpha_min": -2.0,
    "alpha_max": 2.0,
    "alpha_points": 21,
    "sharpness_delta": 0.2,  # sharpness: the train-loss rise from an end to alpha = -delta / 1 + delta
    "sensitivity_samples": 1000,  # test images the sensitivity averages over
    "shared_init": False,
    "eval_every": 1,
    **curvature.SETTINGS,  # each trained end's top eigenvalue, trace and Keskar sharpness (experiments/_curvature.py)
    "curvature_samples": 1000,
}
# --- what the settings mean (see _base.py): which measure work (the time estimate), which must be positive
WORK_SETTINGS, NON_NEGATIVE_SETTINGS = CIFAR_WORK, CIFAR_NON_NEGATIVE
POSITIVE_SETTINGS = (*COMPARISON_POSITIVE, "lr_pair_batch_size")
PROFILES = {
    "smoke": {
        **_FULL,
        "seeds": 2,
        "epochs": 1,
        "min_steps": 2,
        "train_size": 256,
        "test_size": 128,
        "alpha_points": 5,
        "alpha_min": -0.5,
        "alpha_max": 1.5,
        "sharpness_delta": 0.5,
        "sensitivity_samples": 16,
        "curvature_samples": 64,
        "curvature_max_steps": 8,
        "trace_hvp": 6,
        "keskar_steps": 2,
    },
    # 2,048 training images, 3 replicates (a paired contrast: shows only effects above about 2.5
    # SD of the per-replicate differences; the notes say so; full has 5). Batch 32 vs 512 (SPEC's ratio of 16; 200 steps of batch
    # 1024 x 3 seeds would cost twice this profile's budget) and the lr pair at batch 128 (not
    # 512, for the same reason). Every side gets >= 12 epochs and >= 200 optimizer steps: batch 32
    # trains 12 epochs (768 steps), batch 512 50 epochs (200 steps), the lr pair 13 (208 steps);
    # the lr drops at 3/4 of each side's training. The line: alpha in [-1, 2] (Keskar et al.'s
    # range), 13 points, sharpness at delta 0.25; sensitivity over 200 test images. Curvature on 128
    # training images, small budgets (curvature.QUICK).
    "quick": {
        **_FULL,
        "epochs": 12,
        "min_steps": 200,
        "lr_step": 9,
        "batch_sizes": [32, 512],
        "lr_pair_batch_size": 128,
        "train_size": 2048,
        "test_size": 1000,
        "alpha_min": -1.0,
        "alpha_max": 2.0,
        "alpha_points": 13,
        "sharpness_delta": 0.25,
        "sensitivity_samples": 200,
        "eval_every": 3,
        "seeds": 3,
        **curvature.QUICK,
    },
    "full": _FULL,
}


def validate(settings: dict) -> None:
    check_model(settings["model"], "model")
    for p in settings["pairs"]:
        if p not in ("batch", "lr"):
            raise ConfigError(f"pairs: {p!r} unknown; choose from batch, lr")
    if len(settings["batch_sizes"]) != 2 or len(settings["lrs"]) != 2:
        raise ConfigError("batch_sizes and lrs: give exactly two values, the models a and b")
    if settings["alpha_points"] < 2 or settings["alpha_min"] >= settings["alpha_max"]:
        raise ConfigError("alpha: need alpha_points >= 2 and alpha_min < alpha_max")
    if not 0 < settings["sharpness_delta"] <= 1:
        raise ConfigError("sharpness_delta must be in (0, 1]")
    check_sizes(settings)
    if not 0 < settings["sensitivity_samples"] <= settings["test_size"]:
        raise ConfigError("sensitivity_samples must be in 1..test_size")
    curvature.validate(settings)


def trials(settings: dict) -> list[Trial]:
    return [Trial(key=p, fn=run_pair, settings={**settings, "pair": p}, label=f"pair {p}") for p in settings["pairs"]]


def pair_ends(settings: dict, pair: str) -> tuple[dict, dict]:
    """The (batch_size, lr) of models a and b."""
    if pair == "batch":
        return [{"batch_size": b, "lr": settings["batch_pair_lr"]} for b in settings["batch_sizes"]]
    return [{"batch_size": settings["lr_pair_batch_size"], "lr": lr} for lr in settings["lrs"]]


def path_alphas(settings: dict) -> list[float]:
    """The alpha grid, plus -delta and 1 + delta where the grid lacks them (for the sharpness)."""
    d = settings["sharpness_delta"]
    grid = alpha_grid(settings["alpha_min"], settings["alpha_max"], settings["alpha_points"])
    return sorted(set(grid) | {round(-d, 12) + 0.0, round(1 + d, 12)})


class _Part:
    """One of several trainings inside a trial's single checkpoint: the file holds {part: state},
    and a finished part's final state makes its Trainer skip straight to the end on resume."""

    def __init__(self, ckpt, name: str, states: dict, offset: int, total: int):
        self.ckpt, self.name, self.states, self.offset, self.total = ckpt, name, states, offset, total

    def load(self):
        return self.states.get(self.name)

    def save(self, state: dict, force: bool = False) -> None:
        self.states[self.name] = state
        self.ckpt.save(self.states, force)

    def progress(self, done: int, total: int, info: str = "") -> None:
        self.ckpt.progress(self.offset + done, self.total, info)


def _train_side(settings, ctx, seeds, lrs, batch_size, budget, checkpoint=None):
    return train_cifar(
        settings, ctx, settings["model"], seeds, lr=lrs, batch_size=batch_size, checkpoint=checkpoint, budget=budget
    )


def _side_columns(hist: dict, cols) -> dict:
    return {k: (v[:, cols] if v.dim() == 2 else v) for k, v in hist.items()}


def run_pair(settings: dict, ctx) -> dict:
    n = settings["seeds"]
    seeds = seeds_for(settings, 2 * n)
    seeds_a = seeds[0::2]
    seeds_b = list(seeds_a) if settings["shared_init"] else seeds[1::2]
    (a, b) = pair_ends(settings, settings["pair"])
    budgets = [side_budget(settings, a["batch_size"]), side_budget(settings, b["batch_size"])]
    if settings["pair"] == "lr":  # one ensemble: the a members, then the b members, a learning rate each
        trainer, data = _train_side(settings, ctx, seeds_a + seeds_b, [a["lr"]] * n + [b["lr"]] * n, a["batch_size"], budgets[0])
        ends = [[trainer.ens.member(i) for i in range(n)], [trainer.ens.member(n + i) for i in range(n)]]
        hist, div = history(trainer), [d or b for d, b in zip(diverged(trainer), blown_up(trainer.ens))]
        histories = [_side_columns(hist, slice(0, n)), _side_columns(hist, slice(n, 2 * n))]
        # every end of the pair in one call of each measure
        curv = curvature.split(
            curvature.measure(trainer.ens, curvature.subset(settings, data.train), settings, div), [slice(0, n), slice(n, 2 * n)]
        )
        weights = curvature.kept_weights(
            settings["model"], trainer.ens, _labels(settings, a, seeds_a) + _labels(settings, b, seeds_b)
        )
        div = [div[:n], div[n:]]
    else:  # two batch sizes: each side's seeds as one ensemble, one side after the other
        states = (ctx.checkpoint.load() or {}) if ctx.checkpoint else {}
        total = budgets[0]["epochs_trained"] + budgets[1]["epochs_trained"]
        ends, histories, div, curv, kept = [], [], [], [], []
        for name, end, side_seeds, budget, offset in (
            ("a", a, seeds_a, budgets[0], 0),
            ("b", b, seeds_b, budgets[1], budgets[0]["epochs_trained"]),
        ):
            part = _Part(ctx.checkpoint, name, states, offset, total) if ctx.checkpoint else None
            trainer, data = _train_side(settings, ctx, side_seeds, end["lr"], end["batch_size"], budget, checkpoint=part)
            ends.append([trainer.ens.member(i) for i in range(n)])
            histories.append(history(trainer))
            div.append([d or b for d, b in zip(diverged(trainer), blown_up(trainer.ens))])
            curv.append(curvature.measure(trainer.ens, curvature.subset(settings, data.train), settings, div[-1]))
            kept.append(curvature.kept_weights(settings["model"], trainer.ens, _labels(settings, end, side_seeds)))
        weights = curvature.join_weights(kept)

    splits = {"train": (data.train.x, data.train.y), "test": (data.test.x, data.test.y)}
    sens_x = data.test.x[balanced_subset(data.test.y, settings["sensitivity_samples"]).to(data.test.x.device)]
    probs = models.outputs_probabilities(settings["model"])
    alphas = path_alphas(settings)
    paths = [evaluate_path(ends[0][k], ends[1][k], alphas, splits, probs, sens_x) for k in range(n)]
    # the end models themselves, by the same evaluation: alpha = 0 and 1 must reproduce these exactly
    end_metrics = [[evaluate(ends[s][k], splits, probs, sens_x) for s in (0, 1)] for k in range(n)]
    return {
        "pair": settings["pair"],
        "a": a,
        "b": b,
        "seeds": [[sa, sb] for sa, sb in zip(seeds_a, seeds_b)],
        "budgets": budgets,
        "paths": paths,
        "end_metrics": end_metrics,
        "histories": histories,  # per side: [E] epochs and [E, seeds] metrics, batch_loss [epochs, seeds]
        "diverged": [[div[0][k], div[1][k]] for k in range(n)],
        "sensitivity_samples": len(sens_x),
        "curvature": curv,  # per side a, b: top_eigenvalue, trace, trace_ci, keskar per replicate (None: diverged)
        "weights": weights,  # the final weights of every end, for `dlscope analyze --run`
    }


def _labels(settings: dict, end: dict, seeds: list[int]) -> list[str]:
    return [f"pair {settings['pair']}: batch {end['batch_size']}, lr {end['lr']:g}, seed {s}" for s in seeds]


PATH_KEYS = ("train_loss", "test_loss", "train_acc", "test_acc", "sensitivity")


def _describe(pair: str, end: dict) -> float:
    return end["batch_size"] if pair == "batch" else end["lr"]


def _at(path: dict, key: str, alpha: float):
    """path[key] at alpha (None if alpha is not on the path or the value is not finite)."""
    for a, v in zip(path["alpha"], path[key]):
        if abs(a - alpha) < 1e-9:
            return finite_or_none(v)
    return None


def sharpness(path: dict, end: str, delta: float) -> float | None:
    """The train-loss rise from end a (alpha 0) to alpha -delta, or from b (alpha 1) to 1 + delta."""
    at, out = (0.0, -delta) if end == "a" else (1.0, 1.0 + delta)
    lo, hi = _at(path, "train_loss", at), _at(path, "train_loss", round(out, 12))
    return None if lo is None or hi is None else hi - lo


def barrier(path: dict) -> float | None:
    """How far test accuracy dips strictly between the ends, below the worse end (> 0: a barrier)."""
    ends = [_at(path, "test_acc", 0.0), _at(path, "test_acc", 1.0)]
    inner = [v for a, v in zip(path["alpha"], path["test_acc"]) if 1e-9 < a < 1 - 1e-9]
    if None in ends or not inner or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in inner):
        return None
    return min(ends) - min(inner)


def _fall_last_quarter(batch_loss) -> list:
    q = max(0, len(batch_loss) - 1 - len(batch_loss) // 4)
    return (batch_loss[q] - batch_loss[-1]).tolist()


def rows(settings: dict, results: dict) -> list[dict]:
    """One row per pair and replicate: the path, each end's sharpness, the barrier, and where each
    side's training ended (epochs, optimizer steps, final train loss, the fall of the mean
    mini-batch loss over the last quarter of its epochs: near 0, a plateau)."""
    out = []
    for p in settings["pairs"]:
        r = results.get(p)
        if r is None:
            continue
        falls = [_fall_last_quarter(h["batch_loss"]) for h in r["histories"]]
        for k, (path, (sa, sb)) in enumerate(zip(r["paths"], r["seeds"])):
            row = {"pair": p, "seed": sa, "seed_b": sb, "a": _describe(p, r["a"]), "b": _describe(p, r["b"])}
            for s, side in enumerate(("a", "b")):
                h, budget = r["histories"][s], r["budgets"][s]
                loss = h["train_loss"][-1, k].item()
                row.update(
                    {
                        f"{side}_epochs": budget["epochs_trained"],
                        f"{side}_steps": budget["steps"],
                        f"{side}_final_train_loss": finite_or_none(loss),
                        f"{side}_train_loss_fall_last_quarter": falls[s][k],
                    }
                )
            row.update({"alpha": path["alpha"], **{key: path[key] for key in PATH_KEYS}})
            div = r["diverged"][k]  # a diverged end's numbers (finite or not) enter no claim
            for s, side in enumerate(("a", "b")):  # each end's curvature (experiments/_curvature.py)
                row.update(curvature.member_fields((r.get("curvature") or [None, None])[s], k, prefix=f"{side}_"))
            row["sharpness_a"] = None if div[0] else sharpness(path, "a", settings["sharpness_delta"])
            row["sharpness_b"] = None if div[1] else sharpness(path, "b", settings["sharpness_delta"])
            row["barrier"] = None if any(div) else barrier(path)
            for s, side in enumerate(("a", "b")):
                if div[s]:
                    row[f"{side}_final_train_loss"] = None
            row["shared_init"] = settings["shared_init"]
            row["diverged"] = r["diverged"][k]
            out.append(row)
    return out


# --------------------------------------------------------------------------- claims


def _sharper(table: list[dict], pair: str, sharp_end_is_larger: bool, key: str = "{}_keskar") -> tuple:
    """Per replicate: sharpness of the end claimed sharper minus that of the other end; key names
    the measure of an end ("{}_keskar": Keskar ε-sharpness, "sharpness_{}": the rise along the line)."""
    diffs = []
    for r in (r for r in table if r["pair"] == pair):
        larger = "b" if r["b"] > r["a"] else "a"
        sharp = larger if sharp_end_is_larger else ("a" if larger == "b" else "b")
        flat = "a" if sharp == "b" else "b"
        sa, sf = r.get(key.format(sharp)), r.get(key.format(flat))
        diffs.append(None if sa is None or sf is None else sa - sf)
    return greater(diffs), len(diffs)


def _note(stat: Stat, runs: int, what: str) -> str:
    """Why this verdict, in one line: how many replicates point the claimed way and, where the
    verdict is decided, the smallest mean difference this n and spread could have shown (where it
    is inconclusive, Finding.from_stat appends that reason itself)."""
    n, verdict = stat.n, stat.verdict
    left = f"; {runs - n} replicate(s) without a number (diverged)" if runs > n else ""
    if runs == 0:
        return "pair not run"
    if n < 2:
        return f"{n} replicate(s): no spread to decide on{left}"
    diffs = (stat.sample or {}).get("diffs") or []
    count = f"{sum(d > 0 for d in diffs)} of {n} replicates point the claimed way"
    head = {SHOWN: f"{what}: {count}", NOT_SHOWN: f"the opposite holds: {count}"}.get(
        verdict, f"the replicates disagree or the difference is small: {count}"
    )
    could = (
        f"; with n = {n} this design shows only means above {stat.detectable:.3g}"
        if verdict != INCONCLUSIVE and stat.detectable is not None
        else ""
    )
    return head + could + left


def _where_ends_ended(table: list[dict], pair: str, name: dict) -> str:
    """ "; final train loss (median): small batch 2.00 (768 steps), large batch 2.01 (200 steps)": a flat
    end on a high-loss plateau is not a flat minimum, so the verdict's note says where each end is."""
    pts = [r for r in table if r["pair"] == pair]
    if not pts:
        return ""
    parts = []
    for side in ("a", "b"):
        losses = sorted(v for v in (r[f"{side}_final_train_loss"] for r in pts) if v is not None and math.isfinite(v))
        med = f"{losses[len(losses) // 2]:.3f}" if losses else "—"
        parts.append(f"{name[side]} {med} ({pts[0][f'{side}_steps']} steps)")
    return "; final train loss (median): " + ", ".join(parts)


def _curvature_agrees(table: list[dict], pair: str, sharp_end_is_larger: bool) -> str:
    """The same paired comparison by the top eigenvalue and the trace, for the note."""
    parts = []
    for key, what in (("{}_top_eigenvalue", "top eigenvalue"), ("{}_trace", "trace")):
        (value, _, verdict, n), _ = _sharper(table, pair, sharp_end_is_larger, key)
        if value is not None:
            parts.append(f"{what}: {value:+.3g}, {verdict} (n={n})")
    return ("; by " + "; ".join(parts)) if parts else ""


def claims(settings: dict, table: list[dict]) -> list[dict]:
    d = settings["sharpness_delta"]
    keskar = (
        "mean over replicates of [Keskar ε-sharpness of the {} model] − [that of the {} model] (the training "
        "loss's worst rise in an ε-box, on a fixed subset of training images, eval mode); 95% CI: Student-t over replicates"
    )
    line = (
        f"mean over replicates of [train-loss rise stepping {d:g} outward from the {{}} end] − [the same at the "
        f"{{}} end] (same line, same distance); 95% CI: Student-t over replicates"
    )

    def names(pair, small, large):
        r = next((r for r in table if r["pair"] == pair), None)
        if r is None:
            return {}
        return {"a": small, "b": large} if r["b"] > r["a"] else {"a": large, "b": small}

    out = []
    pairs = (
        (
            "batch",
            True,
            "large-batch-sharper",
            "the large-batch minimum is sharper than the small-batch one",
            "Keskar et al. 2017",
            ("large-batch", "small-batch"),
            "the large-batch end is sharper",
            names("batch", "small batch", "large batch"),
        ),
        (
            "lr",
            False,
            "large-lr-flatter",
            "the large-lr minimum is flatter than the small-lr one",
            "Keskar et al. 2017 (lr as the noise scale)",
            ("small-lr", "large-lr"),
            "the small-lr end is sharper",
            names("lr", "small lr", "large lr"),
        ),
    )
    for pair, larger_sharper, fid, claim, source, (sharp, flat), what, name in pairs:
        # measured directly, as Keskar et al. did: the ε-sharpness of each trained end
        stat, runs = _sharper(table, pair, larger_sharper)
        ended = _where_ends_ended(table, pair, name)
        out.append(
            Finding.from_stat(
                stat,
                fid,
                claim,
                source,
                keskar.format(sharp, flat),
                _note(stat, runs, what).replace("diverged", "diverged or not measured")
                + _curvature_agrees(table, pair, larger_sharper)
                + ended,
            ).as_dict()
        )
    for pair, larger_sharper, fid, claim, source, (sharp, flat), what, name in pairs:
        # the original's view: how steeply the loss rises along the line beyond each end
        stat, runs = _sharper(table, pair, larger_sharper, "sharpness_{}")
        out.append(
            Finding.from_stat(
                stat,
                fid.replace("-sharper", "-line-sharper").replace("-flatter", "-line-flatter"),
                claim.replace("minimum is", "end is") + ", along the line between them",
                source,
                line.format(sharp, flat),
                _note(stat, runs, what),
            ).as_dict()
        )
    bars = [r["barrier"] for r in table if r["pair"] == "batch"]
    stat = greater(bars)
    out.append(
        Finding.from_stat(
            stat,
            "barrier",
            "test accuracy dips between the small- and the large-batch model (a barrier)",
            "original",
            "mean over replicates of [lower end's test accuracy − lowest test accuracy for 0 < α < 1]; "
            "95% CI: Student-t over replicates",
            _note(stat, len(bars), "a dip") if bars else "pair not run",
        ).as_dict()
    )
    return out


def summarize(settings: dict, results: dict) -> dict:
    table = rows(settings, results)
    return {
        "epochs": settings["epochs"],
        "min_steps": settings["min_steps"],
        "seeds": settings["seeds"],
        "sharpness_delta": settings["sharpness_delta"],
        "sensitivity_samples": settings["sensitivity_samples"],
        "curvature": curvature.describe(settings),
        "budget": "each side trains >= epochs epochs and >= min_steps optimizer steps (whole epochs), its StepLR "
        "drop at the same fraction of its training; rows give each side's epochs, steps and final train loss",
        "results": table,
        "findings": claims(settings, table),
    }


def metrics(settings: dict, results: dict) -> list[dict]:
    rows_ = []
    for p, r in results.items():
        for s, (end, h) in enumerate(zip(("a", "b"), r["histories"])):
            for k, pair_seeds in enumerate(r["seeds"]):
                base = {"pair": p, "model": end, "batch_size": r[end]["batch_size"], "lr": r[end]["lr"], "seed": pair_seeds[s]}
                for i, e in enumerate(h["epoch"].tolist()):
                    rows_ += [{**base, "alpha": "", "epoch": e, "metric": key, "value": h[key][i, k].item()} for key in METRICS]
        for s, end in enumerate(("a", "b")):  # each end's curvature, at the end of training
            for k, pair_seeds in enumerate(r["seeds"]):
                base = {
                    "pair": p,
                    "model": end,
                    "batch_size": r[end]["batch_size"],
                    "lr": r[end]["lr"],
                    "seed": pair_seeds[s],
                    "alpha": "",
                }
                fields = curvature.member_fields((r.get("curvature") or [None, None])[s], k)
                rows_ += [
                    {**base, "epoch": r["budgets"][s]["epochs_trained"], "metric": key, "value": fields[key]}
                    for key in curvature.MEASURES
                    if fields[key] is not None
                ]
        for path, (sa, _) in zip(r["paths"], r["seeds"]):  # the path, with epoch = the end of training
            for i, a in enumerate(path["alpha"]):
                base = {"pair": p, "model": "interpolated", "batch_size": "", "lr": "", "seed": sa, "alpha": a}
                rows_ += [{**base, "epoch": "", "metric": key, "value": path[key][i]} for key in PATH_KEYS]
    return rows_


# The original's pair A (batch 64 vs 1024, 25 epochs of 50,000 images): test accuracy at the ends
# and at its barrier, drawn as markers on the batch pair's accuracy panel.
ORIGINAL_MARKERS = [(0.0, 0.577), (1.0, 0.526), (0.6, 0.27)]


def figures(settings: dict, results: dict, fig_dir) -> list[str]:
    plt = pyplot()

    table = rows(settings, results)
    paths = []
    for p in settings["pairs"]:
        runs = [r for r in table if r["pair"] == p]
        if not runs:
            continue
        pts = [r for r in runs if not any(r["diverged"])]  # a replicate with a diverged end has no line to show
        alpha = runs[0]["alpha"]
        label = {"batch": "batch size", "lr": "lr"}[p]
        fig, (ax_l, ax_a, ax_s) = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained")
        nan = lambda vs, scale=1: [scale * v if v is not None else float("nan") for v in vs]  # noqa: E731
        for split, style in (("train", "o--"), ("test", "s-")):
            if pts:
                plot_median_iqr(ax_l, alpha, [nan(r[f"{split}_loss"]) for r in pts], split, SPLIT_COLORS[split], style)
                plot_median_iqr(ax_a, alpha, [nan(r[f"{split}_acc"], 100) for r in pts], split, SPLIT_COLORS[split], style)
        if pts:
            plot_median_iqr(ax_s, alpha, [nan(r["sensitivity"]) for r in pts], "test images", SPLIT_COLORS["sensitivity"], "d-")
        if len(pts) < len(runs):
            ax_l.annotate(
                f"{len(runs) - len(pts)} of {len(runs)} replicates left out: an end diverged",
                (0.5, 0.5),
                xycoords="axes fraction",
                ha="center",
                color="red",
                fontsize=9,
            )
        if p == "batch":
            ax_a.plot(
                [m[0] for m in ORIGINAL_MARKERS],
                [100 * m[1] for m in ORIGINAL_MARKERS],
                "k*",
                ms=9,
                label="original test accuracy (full settings)",
            )
        for ax in (ax_l, ax_a, ax_s):
            for x, end in ((0, "a"), (1, "b")):  # the two trained models, named just above the frame
                ax.axvline(x, color="gray", ls=":", lw=1)
                ax.annotate(
                    end,
                    (x, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=9,
                    color="dimgray",
                )
            ax.grid(alpha=0.3)
            ax.set_xlabel("α  (θ = (1−α)·θa + α·θb)")
        # a linear axis: cnn-1's Softmax output bounds its cross-entropy to [1.46, 2.46], too narrow for a log scale
        ax_l.set(ylabel="cross-entropy loss")
        ax_l.set_title("Loss along the line (bands: IQR over replicates)", pad=14)
        ax_a.set(ylabel="accuracy (%)")
        ax_a.set_title("Accuracy along the line", pad=14)
        ax_s.set(ylabel="mean ‖∂p/∂x‖_F")
        ax_s.set_title(f"Sensitivity ({settings['sensitivity_samples']} test images)", pad=14)
        for ax in (ax_l, ax_a, ax_s):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        init = "shared initialisation" if settings["shared_init"] else "independent initialisations"
        r0 = results[p]
        ends = "; ".join(
            f"{side} = {label} {_describe(p, r0[side]):g}: {r0['budgets'][s]['steps']} steps "
            f"({r0['budgets'][s]['epochs_trained']} epochs), "
            f"final train loss {_median([r[f'{side}_final_train_loss'] for r in runs])}"
            for s, side in enumerate(("a", "b"))
        )
        fig.suptitle(f"{settings['model']}, {init}, {len(runs)} replicates. {ends}", fontsize=10)
        paths.append(save_fig(fig, fig_dir / f"pair_{p}.png"))
    if any(isinstance(r.get(f"{s}_{k}"), (int, float)) for r in table for s in ("a", "b") for k in curvature.MEASURES):
        paths.append(curvature_figure(settings, table, fig_dir))
    return paths


def curvature_figure(settings: dict, table: list[dict], fig_dir) -> str:
    """Each end's curvature, per pair (analysis.measures.curvature_figure): one grey line per
    replicate from a to b, the median over replicates as a dot with the interquartile range as a bar."""
    groups = []
    for p in [p for p in settings["pairs"] if any(r["pair"] == p for r in table)]:
        runs = [r for r in table if r["pair"] == p]
        unit = "batch" if p == "batch" else "lr"
        ends = [[{k: r.get(f"{side}_{k}") for k in curvature.MEASURES} for side in ("a", "b")] for r in runs]
        groups.append((f"pair {p}", [0, 1], [f"a: {unit} {runs[0]['a']:g}", f"b: {unit} {runs[0]['b']:g}"], ends))
    fig = curvature.figure(
        settings,
        groups,
        "dots",
        f"Curvature of each trained end ({settings['model']}; {min(settings['curvature_samples'], settings['train_size'])} "
        "training images, eval mode; "
        f"trace {settings['trace_hvp']} HVPs, Keskar ε = {settings['keskar_radius']:g}; grey: one replicate)",
    )
    return save_fig(fig, fig_dir / "curvature.png")


def _median(values) -> str:
    ok = sorted(v for v in values if isinstance(v, (int, float)) and math.isfinite(v))
    if not ok:
        return "—"
    m = len(ok) // 2
    return f"{(ok[m] if len(ok) % 2 else (ok[m - 1] + ok[m]) / 2):.3f} (median)"


def ours(summary: dict) -> dict:
    """This run's test accuracy along the batch pair's line under REFERENCE's row labels (the mean over
    the pair's rows, one per replicate, at each α); the barrier's row notes the α where it lies."""
    rows_ = [r for r in summary.get("results") or [] if isinstance(r, dict) and r.get("pair") == "batch"]
    by_alpha: dict = {}
    for r in rows_:
        for a, c in zip(r.get("alpha") or [], r.get("test_acc") or []):
            if isinstance(a, (int, float)) and isinstance(c, (int, float)):
                by_alpha.setdefault(round(a, 9), []).append(c)
    acc = {a: sum(cs) / len(cs) for a, cs in by_alpha.items()}
    out: dict = {}
    for target in (0, 1):
        if target in acc:
            out[f"test accuracy at α = {target}"] = acc[target]
    inner = [(c, a) for a, c in acc.items() if 1e-6 < a < 1 - 1e-6]
    if inner:
        c, a = min(inner)
        out["lowest test accuracy for 0 < α < 1"] = {"value": c, "note": f"ours at α = {a:g}"}
    return out
