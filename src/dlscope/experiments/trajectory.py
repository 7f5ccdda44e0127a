"""3. trajectory: the optimization path of cnn-21 in parameter space, seen through a joint PCA.

All runs (different initialisations) train together as one Ensemble. The parameter vector of
every run, whole model and one layer, is taken at initialisation and after every epoch; one PCA
(centred, not scaled) is fitted on all runs' points together, so the runs share the axes.
Test loss and accuracy are measured every epoch (the figure's labels); the training loss recorded
is the epoch's mean mini-batch loss (no separate pass over the training set, to save time).
"""

from __future__ import annotations

import torch

from .. import models
from ..analysis.pca import fit_pca, select_names
from ..engine import Ensemble, Trainer, TrainConfig, evaluate_classifier
from .. import findings as fd
from ._base import ConfigError, Trial, join_seed_parts, pyplot, save_fig, seeds_for, trials_by_seed_parts
from ._cifar import COMMON, check_model, check_sizes, steps_per_epoch

NAME = "trajectory"
TITLE = "The optimization path in parameter space (PCA)"

# --- for the report and the progress display (see _base.py)
PART = "Optimization"
COST = 26  # its share of `run all` (quick, default executor, 2 idle cores; bench/study_time.py, 2026-12-06) in seconds
LOOK_FOR = (
    "whether runs from different initialisations travel to different places, as the original says "
    "(finding runs-end-apart: each run's distance to the nearest other run's end point against its own "
    "path length, in the full parameter space, not in the figure's plane). The figure's plane is one PCA of "
    "all runs' points together: it must also span the distances between the runs' starting points, so its "
    "PC1+PC2 hold only part of the variance, the share printed on its axes and in the note of "
    "paths-nearly-planar; panel (b) starts every path at 0 to show how short the paths are beside those "
    "distances. Li et al. (2018) find each single path nearly planar (paths-nearly-planar, one PCA per "
    "run); a random walk in many dimensions puts about 76% of its variance in two components too, so "
    "that alone says little about training."
)
CAPTIONS = {
    "trajectory_whole.png": "The whole model's parameters of every run, at initialisation (square) and after each "
    "epoch to the end (star), projected on the first two principal components of one joint PCA of all runs' "
    "points (their share of the variance on the axes); numbers: test accuracy (%) every third epoch, left out "
    "where they would overlap; diverged runs are left out of the PCA and named in the legend (the original's Fig 12).",
    "trajectory_layer.png": "The same for one layer's parameters (by default the first convolution's weight) "
    "(the original's Fig 11).",
}
REFERENCE = {
    "what": "final test accuracy over the runs (lowest – highest)",
    "original": "after 50 epochs",
    "kind": "acc",
    "rows": {"final test accuracy, range over runs": (0.39, 0.43)},
}

_FULL = {
    "model": "cnn-21",
    "runs": 8,
    "layer": "0.weight",  # the first conv layer's weight
    "epochs": 50,
    "batch_size": 1000,
    **COMMON,
    "label_every": 3,  # annotate every third epoch with its test accuracy
}
# --- what the settings mean (see _base.py): which measure work (the time estimate), which must be positive
WORK_SETTINGS = {"models": ("runs",), "length": ("epochs",), "data": ("train_size",)}
POSITIVE_SETTINGS = ("runs", "epochs", "batch_size", "lr")
NON_NEGATIVE_SETTINGS = ("train_size", "test_size")
PROFILES = {
    "smoke": {**_FULL, "runs": 3, "epochs": 4, "batch_size": 100, "lr": 2e-3, "lr_step": 3, "train_size": 300, "test_size": 200},
    "quick": {**_FULL, "epochs": 12, "batch_size": 200, "lr": 2e-3, "lr_step": 8, "train_size": 4000, "test_size": 1000},
    "full": _FULL,
}


def validate(settings: dict) -> None:
    check_model(settings["model"], "model")
    torch.manual_seed(0)
    names = [k for k, _ in models.build(settings["model"]).named_parameters()]
    try:
        select_names(names, settings["layer"])
    except KeyError:
        raise ConfigError(
            f"layer: {settings['layer']!r} is not a parameter or module of {settings['model']}; have: {', '.join(names)}"
        ) from None
    if settings["label_every"] < 1:
        raise ConfigError("label_every: must be at least 1")
    check_sizes(settings)


def trials(settings: dict) -> list[Trial]:
    # the runs' ensemble in two trials of consecutive seeds, so that two cores share it
    return trials_by_seed_parts(
        settings, train_runs, "runs", seeds_for(settings, settings["runs"]), f"{settings['runs']} x {settings['model']}"
    )


def joined(results: dict) -> dict | None:
    """The trials' results as one training of every finished run (None if none finished)."""
    return join_seed_parts(results, "runs", shared=("layer_params",))


def train_runs(settings: dict, ctx) -> dict:
    seeds = settings["trial_seeds"]
    data = ctx.load_data("cifar10", settings["train_size"], settings["test_size"])
    ens = Ensemble.from_seeds(settings["model"], seeds, ctx.device)
    layer = select_names(list(ens.params), settings["layer"])
    init_whole, init_layer = ens.flat().cpu(), ens.flat(layer).cpu()
    train_config = TrainConfig.from_settings(settings)
    trainer = Trainer(ens, train_config, seeds)

    def evaluate(t: Trainer) -> dict:
        # only the test set: the labels on the figure; the train loss is the epoch's mini-batch mean
        test = evaluate_classifier(t.ens, data.test.x, data.test.y)
        return {"test_loss": test["loss"], "test_acc": test["acc"]}

    def snap(t: Trainer) -> None:
        # kept in the trainer's history, so a resumed training still has the earlier points
        t.history.setdefault("whole", []).append(t.ens.flat().cpu())
        t.history.setdefault("layer", []).append(t.ens.flat(layer).cpu())

    trainer.run(data.train.x, data.train.y, evaluate=evaluate, checkpoint=ctx.checkpoint, on_epoch=snap)
    h = trainer.history
    return {
        "seeds": seeds,
        "layer_params": layer,
        "whole": torch.stack([init_whole] + h["whole"]),  # [epochs + 1, runs, P]
        "layer": torch.stack([init_layer] + h["layer"]),
        "test_loss": torch.stack(h["test_loss"]),  # [epochs + 1, runs]
        "test_acc": torch.stack(h["test_acc"]),
        "batch_loss": torch.stack(h["batch_loss"]),  # [epochs, runs]: mean mini-batch loss of each epoch
        "diverged": trainer.diverged.tolist(),
    }


# --------------------------------------------------------------------------- geometry and claims


def finite_runs(r: dict, which: str = "whole") -> torch.Tensor:
    """[runs] bool: runs whose every snapshot is finite and which did not diverge. Only these
    enter the PCA and the distances; the others are marked as diverged."""
    pts = r[which]
    return torch.isfinite(pts).all(-1).all(0) & ~torch.as_tensor(r["diverged"], dtype=torch.bool)


def projections(r: dict, which: str):
    """Joint PCA of the finite runs' points: (pca, coordinates [epochs + 1, runs, 2]); a diverged
    run's coordinates are NaN. (None, None) if no run is finite."""
    ok = finite_runs(r, which)
    if not ok.any():
        return None, None
    pts = r[which].double()
    pca = fit_pca(pts[:, ok].reshape(-1, pts.shape[-1]), k=2)
    xy = torch.full(pts.shape[:2] + (2,), float("nan"), dtype=torch.float64)
    xy[:, ok] = pca.transform(pts[:, ok])
    return pca, xy


def run_geometry(r: dict, which: str = "whole") -> list[dict]:
    """Per run, in the full parameter space: the length of its path (sum of the epoch-to-epoch
    steps), its displacement (start to end), the distance to the nearest other run's start and
    end, and the share of its own path's variance in its own first two principal components (Li
    et al. 2018's PCA, one path at a time). None where the run diverged."""
    pts = r[which].double()
    ok = finite_runs(r, which)
    idx = [i for i in range(pts.shape[1]) if ok[i]]
    out = []
    for i in range(pts.shape[1]):
        if not ok[i]:
            out.append({"path_length": None, "displacement": None, "nearest_start": None, "nearest_end": None, "own_pc12": None})
            continue
        path = pts[:, i]
        others = [j for j in idx if j != i]
        near = lambda e: min((float((pts[e, i] - pts[e, j]).norm()) for j in others), default=None)  # noqa: E731
        own = fit_pca(path, k=2).explained_variance_ratio.sum().item() if len(path) > 2 else None
        out.append(
            {
                "path_length": float((path[1:] - path[:-1]).norm(dim=1).sum()),
                "displacement": float((path[-1] - path[0]).norm()),
                "nearest_start": near(0),
                "nearest_end": near(-1),
                "own_pc12": own,
            }
        )
    return out


def claims(rows: list[dict], joint_pc12: float | None = None) -> list[dict]:
    """Claims about the paths, judged from the per-run results rows alone (joint_pc12: PC1+PC2's
    share of the joint PCA, the figure's plane, for the note). The runs are independent (no pairing):
    each is reduced to one number, then findings.greater is the one-sample rule over runs (Student-t
    interval beyond the margin, and from 6 runs the exact sign-flip test of the differences too)."""
    ratios = [r["nearest_end"] / r["path_length"] for r in rows if r.get("nearest_end") is not None and r.get("path_length")]
    stat = fd.greater(ratios, margin=1.0)
    apart = sum(x > 1 for x in ratios)
    out = [
        fd.Finding.from_stat(
            stat,
            "runs-end-apart",
            "Runs from different initialisations travel to different places: each run ends farther from every "
            "other run's end point than the whole length of its own path.",
            "original",
            "mean over runs of (distance to the nearest other run's end point) / (own path length), whole model, full parameter "
            "space; one-sample t over runs against 1",
            f"ratio > 1 for {apart} of {stat.n} runs"
            + ("" if stat.verdict != fd.NOT_SHOWN else "; the runs' ends are within a path length of each other"),
        ).as_dict()
    ]
    own = [r["own_pc12"] for r in rows if r.get("own_pc12") is not None]
    stat = fd.greater(own, margin=0.5)
    joint = (
        ""
        if joint_pc12 is None
        else f"; the figure's joint PCA of all runs holds {100 * joint_pc12:.1f}% in its PC1+PC2"
        + (" (less: its plane must also span the distances between the runs)" if own and joint_pc12 < min(own) else "")
    )
    out.append(
        fd.Finding.from_stat(
            stat,
            "paths-nearly-planar",
            "Each run's path lies mostly in a plane: its own first two principal components hold most (> 50%) of its variance.",
            "Li et al. 2018",
            "mean over runs of PC1+PC2's share of the variance of the run's own path (whole model); one-sample t over runs "
            "against 0.5",
            f"above 50% for {sum(x > 0.5 for x in own)} of {stat.n} runs" + joint + "; a random walk in many dimensions "
            "puts about 76% there too (6/π² + 6/(4π²), Antognini & Sohl-Dickstein 2018)",
        ).as_dict()
    )
    return out


# --------------------------------------------------------------------------- outputs


def seed_results(settings: dict, r: dict) -> list[dict]:
    """One row per run (seed): where it ended (test metrics, final mini-batch training loss, epochs
    and optimizer steps) and its path's geometry."""
    ok = finite_runs(r)
    geo = run_geometry(r, "whole")
    layer_geo = run_geometry(r, "layer")
    epochs = r["batch_loss"].shape[0]
    rows = []
    for i, seed in enumerate(r["seeds"]):
        good = bool(ok[i])
        val = lambda t: fd.finite_or_none(t) if good else None  # noqa: E731
        rows.append(
            {
                "run": i,
                "seed": seed,
                "test_acc": val(r["test_acc"][-1, i]),
                "test_loss": val(r["test_loss"][-1, i]),
                "final_batch_loss": val(r["batch_loss"][-1, i]) if epochs else None,
                "epochs": epochs,
                "steps": epochs * steps_per_epoch(settings["train_size"], settings["batch_size"]),
                "diverged": not good,
                **geo[i],
                "own_pc12_layer": layer_geo[i]["own_pc12"],
            }
        )
    return rows


def summarize(settings: dict, results: dict) -> dict:
    r = joined(results)
    if r is None:
        return {}
    out = {"layer": settings["layer"], "runs": len(r["seeds"]), "seeds": r["seeds"]}
    for which in ("whole", "layer"):
        pca, _ = projections(r, which)
        out[f"explained_variance_{which}"] = pca.explained_variance_ratio.tolist() if pca else None
        out[f"params_{which}"] = r[which].shape[-1]
    rows = seed_results(settings, r)  # final_batch_loss: the mean mini-batch training loss of the last epoch
    ev = out["explained_variance_whole"]
    return {**out, "results": rows, "findings": claims(rows, sum(ev) if ev else None)}


def metrics(settings: dict, results: dict) -> list[dict]:
    rows = []
    r = joined(results)
    if r is None:
        return rows
    coords = {w: projections(r, w)[1] for w in ("whole", "layer")}
    for i, seed in enumerate(r["seeds"]):
        for e in range(r["test_acc"].shape[0]):
            for k in ("test_loss", "test_acc"):
                rows.append({"run": i, "seed": seed, "epoch": e, "metric": k, "value": float(r[k][e, i])})
            if e > 0:
                rows.append(
                    {"run": i, "seed": seed, "epoch": e, "metric": "batch_loss", "value": float(r["batch_loss"][e - 1, i])}
                )
            for w, c in coords.items():
                if c is not None:
                    rows.append({"run": i, "seed": seed, "epoch": e, "metric": f"pc1_{w}", "value": float(c[e, i, 0])})
                    rows.append({"run": i, "seed": seed, "epoch": e, "metric": f"pc2_{w}", "value": float(c[e, i, 1])})
    return rows


def _overlaps(box, placed, pad: float = 1.0) -> bool:
    return any(box.x0 - pad < b.x1 and b.x0 - pad < box.x1 and box.y0 - pad < b.y1 and b.y0 - pad < box.y1 for b in placed)


def _label_points(ax, renderer, labels) -> None:
    """Annotate points without overlaps: labels = [(text, (x, y), colour)], most important first.
    Each label tries a few offsets around its point and is left out if all of them collide with
    a label already placed (the slow end of a path would otherwise pile its labels up) or would
    stick out of the axes."""
    placed, frame = [], ax.get_window_extent(renderer)
    for text, xy, color in labels:
        for dx, dy in ((5, 4), (5, -11), (-16, 4), (-16, -11), (5, 12), (-16, -19)):
            a = ax.annotate(text, xy, textcoords="offset points", xytext=(dx, dy), fontsize=7, color=color, fontweight="bold")
            a.set_in_layout(False)
            box = a.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if not inside or _overlaps(box, placed):
                a.remove()
                continue
            placed.append(box)
            break


def figures(settings: dict, results: dict, fig_dir) -> list[str]:
    plt = pyplot()

    r = joined(results)
    if r is None:
        return []
    colors = plt.get_cmap("tab10").colors
    paths = []
    for which, what in (("whole", "whole model"), ("layer", f"layer {settings['layer']}")):
        pca, xy = projections(r, which)
        ok = finite_runs(r, which)
        epochs = r[which].shape[0] - 1
        fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(14, 6.2), layout="constrained")
        if pca is None:
            for ax in (ax_a, ax_b):
                ax.text(
                    0.5, 0.5, "every run diverged: no finite points for a PCA", ha="center", va="center", transform=ax.transAxes
                )
                ax.set_axis_off()
            ratio = [0.0, 0.0]
        else:
            ratio = pca.explained_variance_ratio.tolist() + [0.0]
        # (a) where the runs are; (b) the same axes, each run moved to start at 0, so that paths
        # short next to the distances between initialisations can be seen
        labelled = range(settings["label_every"], epochs + 1, settings["label_every"])
        labels = {ax_a: [], ax_b: []}  # per panel: the runs' last labels first, then the others
        for ax, shift in ((ax_a, False), (ax_b, True)) if pca is not None else ():
            labels_end, labels_mid = [], []
            for i, seed in enumerate(r["seeds"]):
                c = colors[i % len(colors)]
                if not ok[i]:
                    if not shift:
                        ax.plot([], [], "x", color=c, label=f"run {i + 1} (seed {seed}): diverged, not in the PCA")
                    continue
                path = xy[:, i] - (xy[0, i] if shift else 0)
                ax.plot(
                    path[:, 0],
                    path[:, 1],
                    "-o",
                    color=c,
                    ms=3,
                    lw=1,
                    label=None if shift else f"run {i + 1} (seed {seed}): {100 * r['test_acc'][-1, i]:.1f}%",
                )
                ax.plot(path[0, 0], path[0, 1], "s", color=c, ms=7, mec="k", mew=0.6)  # initialisation
                ax.plot(path[-1, 0], path[-1, 1], "*", color=c, ms=12, mec="k", mew=0.6)  # end
                for e in labelled:
                    item = (f"{100 * r['test_acc'][e, i]:.0f}", path[e].tolist(), c)
                    (labels_end if e == labelled[-1] else labels_mid).append(item)
            ax.set(
                xlabel=f"PC1 ({100 * ratio[0]:.1f}% of variance)" + (", from the run's start" if shift else ""),
                ylabel=f"PC2 ({100 * ratio[1]:.1f}% of variance)" + (", from the run's start" if shift else ""),
            )
            ax.grid(alpha=0.3)
            labels[ax] = labels_end + labels_mid
        if pca is not None:
            ax_a.set_title("(a) positions in the joint PCA plane", fontsize=10)
            ax_b.set_title("(b) the same paths, each shifted to start at (0, 0)", fontsize=10)
        n_ok = int(ok.sum())
        fig.suptitle(
            f"{settings['model']}, {what} ({r[which].shape[-1]:,} parameters): {n_ok} runs"
            + (f" ({len(ok) - n_ok} diverged, left out)" if n_ok < len(ok) else "")
            + f", {epochs} epochs, "
            f"one PCA on all runs' points: PC1+PC2 hold {100 * (ratio[0] + ratio[1]):.1f}% of their variance\n"
            f"square: initialisation, star: end; numbers: test accuracy (%) every {settings['label_every']} epochs "
            "(left out where they would overlap)",
            fontsize=11,
        )
        if pca is not None:
            fig.legend(loc="outside right center", fontsize=8, title="final test accuracy", title_fontsize=8)
            fig.canvas.draw()  # settles the layout, so label boxes are measured where they will be
            for ax, items in labels.items():
                _label_points(ax, fig.canvas.get_renderer(), items)
        paths.append(save_fig(fig, fig_dir / f"trajectory_{which}.png"))
    return paths


def ours(summary: dict) -> dict:
    """This run's final test accuracies under REFERENCE's row label: their range over the runs."""
    accs = [r.get("test_acc") for r in summary.get("results") or [] if isinstance(r, dict)]
    accs = [a for a in accs if isinstance(a, (int, float))]
    return {"final test accuracy, range over runs": (min(accs), max(accs))} if accs else {}
