"""8. interpolation: loss, accuracy and sensitivity along the line between two trained cnn-1s.

Pair "batch": batch 64 vs batch 1024 at one lr. Pair "lr": lr 1e-3 vs 1e-2 at one batch size.
Each pair is one trial that trains its two models and then walks the line theta(alpha). The lr
pair's two models have the same shapes and batch size, so they train as one ensemble with a
learning rate per member; the batch pair's cannot (their steps differ), so they train one after
the other, both inside the trial's one checkpoint file.

With shared_init both models start from one initialisation (Keskar et al.); otherwise from two
(Goodfellow et al., and the original study). The seed also drives the data order, so a shared
initialisation shares the shuffle too.
"""

from __future__ import annotations


from .. import models
from ..analysis.interpolation import alpha_grid, evaluate, evaluate_path
from ..data import balanced_subset
from .base import ConfigError, Trial, save_fig, seeds_for
from .cifar import COMMON, METRICS, check_model, check_sizes, diverged, history, train_cifar

NAME = "interpolation"
TITLE = "Flatness 1: linear interpolation between two trained models"

# --- for the report and the progress display (see base.py)
COST = 23  # seconds of the quick profile on the reference CPU; only the ratios between experiments matter
LOOK_FOR = ("the loss along the line between the two models and beyond them: how flat each end "
            "is, and whether a barrier separates them (Goodfellow et al. 2015, Keskar et al. 2017).")
CAPTIONS = {
    "pair_batch.png": "Train and test loss, accuracy and input sensitivity along the line θ(α) = (1−α)·θa + α·θb "
    "from the small-batch model (α = 0) to the large-batch one (α = 1) and beyond (the original's Fig 19).",
    "pair_lr.png": "The same along the line from the model trained at the smaller learning rate (α = 0) to the one "
    "at the larger (α = 1) (the original's Fig 22).",
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
    "epochs": 25,
    "batch_sizes": [64, 1024],  # pair "batch"
    "batch_pair_lr": 4e-4,
    "lrs": [1e-3, 1e-2],  # pair "lr"
    "lr_pair_batch_size": 512,
    **{k: v for k, v in COMMON.items() if k != "lr"},  # the lr is what the pairs/sweeps set
    "alpha_min": -2.0,
    "alpha_max": 2.0,
    "alpha_points": 21,
    "sensitivity_samples": 1000,  # test images the sensitivity averages over
    "shared_init": False,
    "eval_every": 1,
}
PROFILES = {
    "smoke": {**_FULL, "epochs": 1, "train_size": 256, "test_size": 128, "alpha_points": 4, "alpha_min": -1.0,
              "sensitivity_samples": 16},
    # 8 epochs on 4,000 images; the lr step comes at epoch 6 as step 10 of 25 does in full.
    # Train/test curves evaluated every 4 epochs.
    "quick": {**_FULL, "epochs": 8, "lr_step": 6, "train_size": 4000, "test_size": 1000,
              "sensitivity_samples": 250, "eval_every": 4},
    "full": _FULL,
}


def validate(cfg: dict) -> None:
    check_model(cfg["model"], "model")
    for p in cfg["pairs"]:
        if p not in ("batch", "lr"):
            raise ConfigError(f"pairs: {p!r} unknown; choose from batch, lr")
    if len(cfg["batch_sizes"]) != 2 or len(cfg["lrs"]) != 2:
        raise ConfigError("batch_sizes and lrs: give exactly two values, the models a and b")
    if cfg["alpha_points"] < 2 or cfg["alpha_min"] >= cfg["alpha_max"]:
        raise ConfigError("alpha: need alpha_points >= 2 and alpha_min < alpha_max")
    check_sizes(cfg)
    if not 0 < cfg["sensitivity_samples"] <= cfg["test_size"]:
        raise ConfigError("sensitivity_samples must be in 1..test_size")


def trials(cfg: dict) -> list[Trial]:
    return [Trial(key=p, fn=run_pair, args={**cfg, "pair": p}, label=f"pair {p}") for p in cfg["pairs"]]


def pair_ends(cfg: dict, pair: str) -> tuple[dict, dict]:
    """The (batch_size, lr) of models a and b."""
    if pair == "batch":
        return [{"batch_size": b, "lr": cfg["batch_pair_lr"]} for b in cfg["batch_sizes"]]
    return [{"batch_size": cfg["lr_pair_batch_size"], "lr": lr} for lr in cfg["lrs"]]


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


def run_pair(args: dict, ctx) -> dict:
    seed_a, seed_b = seeds_for(args, 2)
    if args["shared_init"]:
        seed_b = seed_a
    (a, b) = pair_ends(args, args["pair"])
    model = args["model"]
    if args["pair"] == "lr":  # one ensemble, a learning rate per member
        trainer, data = train_cifar(args, ctx, model, [seed_a, seed_b], lr=[a["lr"], b["lr"]], batch_size=a["batch_size"])
        ends = [trainer.ens.member(0), trainer.ens.member(1)]
        hist = history(trainer)
        histories = [{k: v[:, i] if v.dim() == 2 else v for k, v in hist.items()} for i in range(2)]
        div = diverged(trainer)
    else:  # two batch sizes: two trainings, one after the other
        states = (ctx.checkpoint.load() or {}) if ctx.checkpoint else {}
        ends, histories, div = [], [], []
        for i, (name, end, seed) in enumerate((("a", a, seed_a), ("b", b, seed_b))):
            part = _Part(ctx.checkpoint, name, states, i * args["epochs"], 2 * args["epochs"]) if ctx.checkpoint else None
            trainer, data = train_cifar(args, ctx, model, [seed], lr=end["lr"], batch_size=end["batch_size"], checkpoint=part)
            ends.append(trainer.ens.member(0))
            histories.append({k: v[:, 0] if v.dim() == 2 else v for k, v in history(trainer).items()})
            div += diverged(trainer)

    splits = {"train": (data.train.x, data.train.y), "test": (data.test.x, data.test.y)}
    sens_x = data.test.x[balanced_subset(data.test.y, args["sensitivity_samples"]).to(data.test.x.device)]
    probs = models.outputs_probabilities(model)
    alphas = alpha_grid(args["alpha_min"], args["alpha_max"], args["alpha_points"])
    path = evaluate_path(ends[0], ends[1], alphas, splits, probs, sens_x)
    # the end models themselves, by the same evaluation: alpha = 0 and 1 must reproduce these exactly
    end_metrics = [evaluate(m, splits, probs, sens_x) for m in ends]
    return {
        "pair": args["pair"],
        "a": a,
        "b": b,
        "seeds": [seed_a, seed_b],
        "path": path,
        "end_metrics": end_metrics,
        "histories": histories,
        "diverged": div,
        "sensitivity_samples": len(sens_x),
    }


PATH_KEYS = ("train_loss", "test_loss", "train_acc", "test_acc", "sensitivity")


def _describe(pair: str, end: dict) -> float:
    return end["batch_size"] if pair == "batch" else end["lr"]


def summarize(cfg: dict, results: dict) -> dict:
    rows = []
    for p in cfg["pairs"]:
        r = results.get(p)
        if r is None:
            continue
        rows.append({
            "pair": p,
            "a": _describe(p, r["a"]),
            "b": _describe(p, r["b"]),
            "alpha": r["path"]["alpha"],
            **{k: r["path"][k] for k in PATH_KEYS},
            "shared_init": cfg["shared_init"],
            "diverged": r["diverged"],
        })  # fmt: skip
    return {"epochs": cfg["epochs"], "sensitivity_samples": cfg["sensitivity_samples"], "results": rows}


def metrics(cfg: dict, results: dict) -> list[dict]:
    rows = []
    for p, r in results.items():
        for end, h, seed in zip(("a", "b"), r["histories"], r["seeds"]):
            base = {"pair": p, "model": end, "batch_size": r[end]["batch_size"], "lr": r[end]["lr"], "seed": seed}
            for i, e in enumerate(h["epoch"].tolist()):
                rows += [{**base, "alpha": "", "epoch": e, "metric": k, "value": h[k][i].item()} for k in METRICS]
        for i, a in enumerate(r["path"]["alpha"]):  # the path, with epoch = the end of training
            base = {"pair": p, "model": "interpolated", "batch_size": "", "lr": "", "seed": "", "alpha": a}
            rows += [{**base, "epoch": cfg["epochs"], "metric": k, "value": r["path"][k][i]} for k in PATH_KEYS]
    return rows


def figures(cfg: dict, results: dict, fig_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    paths = []
    for p, r in results.items():
        path = r["path"]
        alpha = path["alpha"]
        label = {"batch": "batch size", "lr": "lr"}[p]
        a, b = _describe(p, r["a"]), _describe(p, r["b"])
        fig, (ax_l, ax_a, ax_s) = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
        for split, style in (("train", "o--"), ("test", "s-")):
            ax_l.plot(alpha, path[f"{split}_loss"], style, ms=4, label=split)
            ax_a.plot(alpha, [100 * v for v in path[f"{split}_acc"]], style, ms=4, label=split)
        ax_s.plot(alpha, path["sensitivity"], "d-", ms=4, color="tab:green", label="test images")
        for ax in (ax_l, ax_a, ax_s):
            for x, end in ((0, "a"), (1, "b")):  # the two trained models, named just above the frame
                ax.axvline(x, color="gray", ls=":", lw=1)
                ax.annotate(end, (x, 1), xycoords=("data", "axes fraction"), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=9, color="dimgray")
            ax.grid(alpha=0.3, which="both")
            ax.set_xlabel("α  (θ = (1−α)·θa + α·θb)")
        ax_l.set_yscale("log")
        lo, hi = ax_l.get_ylim()
        if hi < 10 * lo:  # less than a decade (cnn-1's Softmax bounds its loss): label ticks as plain numbers
            ax_l.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax_l.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax_l.set(ylabel="cross-entropy loss (log scale)")
        ax_l.set_title("Loss along the line", pad=14)
        ax_a.set(ylabel="accuracy (%)")
        ax_a.set_title("Accuracy along the line", pad=14)
        ax_s.set(ylabel="mean ‖∂p/∂x‖_F")
        ax_s.set_title(f"Sensitivity ({r['sensitivity_samples']} test images)", pad=14)
        ax_l.legend(fontsize=8)
        ax_a.legend(fontsize=8)
        init = "shared initialisation" if cfg["shared_init"] else "independent initialisations"
        epochs = f"{cfg['epochs']} epoch{'s' if cfg['epochs'] != 1 else ''}"
        fig.suptitle(f"{cfg['model']}: a = {label} {a:g} (α=0), b = {label} {b:g} (α=1); {epochs}, {init}")
        paths.append(save_fig(fig, fig_dir / f"pair_{p}.png"))
    return paths


def ours(summary: dict) -> dict:
    """This run's test accuracy along the batch pair's line under REFERENCE's row labels (the mean over
    the pair's rows, one per seed, at each α); the barrier's row notes the α where it lies."""
    rows = [r for r in summary.get("results") or [] if isinstance(r, dict) and r.get("pair") == "batch"]
    by_alpha: dict = {}
    for r in rows:
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
