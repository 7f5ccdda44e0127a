"""A `dlscope analyze` folder as the report reads it: its summary read back as data (every
measure's shape checked by the measure itself, analysis.measures), its table and text, its
figures, and its blocks, rendered by the report's own renderers (render_html, render_md), alone
(report.html / report.md in the folder) or as a section of a study's report.

The producer (analyze.py) writes the folder through store.RunStore and calls `summarize` and
`render` here; nothing here imports it."""

from __future__ import annotations

from pathlib import Path

from ..analysis import measures as ms
from .blocks import Figure, Table, cells

SUBFOLDERS = ("measures", "figures")  # below the analyze folder (RunStore checks and cleans them)
FIGURE_CAPTIONS = {
    "density.png": "Hessian spectral density (stochastic Lanczos quadrature, Ghorbani et al. 2019); for a run's kept "
    "models, one line per model.",
    "plane.png": "Loss on a 2-D filter-normalised plane (Li et al. 2018) with the model at the centre (red star).",
    "sharpness.png": "Sharpness (keskar: % rise in an ε-box; sam/adaptive: worst rise in a ball; average: mean rise).",
}
SHOWN_MODELS = 9  # planes drawn for a run's kept models: the first few (every number is in summary.json)


def is_analyze_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "summary.json").is_file() and (path / "measures").is_dir()


# --------------------------------------------------------------------------- reading back


def measure_problem(name: str, r, n: int | None = None) -> str | None:
    """None if r has the shape measure `name` is written in (n: models of an ensemble, None for one
    model); else what is wrong, in a few words."""
    measure = ms.BY_NAME.get(name)
    if measure is None:
        return "not a measure of dlscope analyze"
    try:
        if not isinstance(r, dict):
            return f"a JSON {type(r).__name__}, not an object"
        ok = measure.is_well_formed(r, n)
    except (TypeError, ValueError, OverflowError, RecursionError, KeyError, IndexError) as e:
        return str(e) or type(e).__name__
    return None if ok else "a field is missing or of the wrong type"


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def read_summary(folder: Path) -> tuple[dict | None, list[str]]:
    """An analyze folder's summary.json as the report uses it, or (None, what is damaged). The
    per-model tables are rebuilt from the measures, so that they cannot disagree with them."""
    from ..store import read_json

    path = folder / "summary.json"
    s, why = read_json(path)
    if why or not isinstance(s, dict):
        return None, [f"summary.json: {why or ('missing' if s is None else 'not a JSON object')}"]
    problems = [
        f"summary.json: {key} is not text" for key in ("model", "data", "loss", "mode") if not isinstance(s.get(key), str)
    ]
    if not ms.is_count(s.get("train_size")):
        problems.append("summary.json: train_size is not a number of images")
    if not _strings(s.get("failed", [])):
        problems.append("summary.json: failed is not a list of measures")
    if s.get("diverged") is not None and not isinstance(s["diverged"], str):
        problems.append("summary.json: diverged is not text")
    n = None
    if "models" in s:
        if (
            not _strings(s["models"])
            or not s["models"]
            or not isinstance(s.get("run"), str)
            or not _strings(s.get("skipped_diverged", []))
        ):
            problems.append("summary.json: models, run or skipped_diverged is not what dlscope analyze --run writes")
        else:
            n = len(s["models"])
    for name in ms.NAMES:
        if s.get(name) is not None and (why := measure_problem(name, s[name], n)):
            problems.append(f"summary.json: {name}: {why}")
    if problems:
        return None, problems
    if n is not None:
        s["per_model"] = per_model(s, s["models"])
    return s, []


# --------------------------------------------------------------------------- the summary


def per_model(results: dict, labels: list[str]) -> list[dict]:
    """An ensemble's results split per model, measure by measure (None where not measured)."""
    return [
        {"label": label, **{m.name: m.member_of(results[m.name], i) if results.get(m.name) else None for m in ms.MEASURES}}
        for i, label in enumerate(labels)
    ]


def summarize(config: dict, results: dict, failed: list[str], diverged: str | None, skipped: list[str]) -> dict:
    """summary.json of an analyze folder: the settings it was measured with, every measure's result
    (None where not measured), the failures; with --run the models and the results per model."""
    summary = {
        "model": config["model"],
        "data": config["data"],
        "train_size": config["train_size"],
        "loss": config["loss"],
        "mode": config["mode"],
        **{m: results.get(m) for m in ms.NAMES},
        "failed": failed,
        "diverged": diverged,
    }
    if config.get("models") is not None:
        labels = config["models"]
        summary.update(run=config["run"], models=labels, skipped_diverged=skipped, per_model=per_model(results, labels))
    return summary


def summary_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The measures as one table (head, rows of text): one row per measure for one model, one row
    per model for a run's kept models, the columns each measure declares."""
    present = [m for m in ms.MEASURES if summary.get(m.name)]
    if summary.get("per_model") is not None:
        whole = {m.name: summary[m.name] for m in present}
        head = ["model"] + [h for m in present for h, _ in m.table_cells(whole[m.name], 0)]
        rows = []
        for i, row in enumerate(summary["per_model"]):
            rows.append([row["label"]] + [text for m in present for _, text in m.table_cells(whole[m.name], i)])
        return head, rows
    return ["measure", "value", "certificate"], [r for m in present for r in m.table_rows(summary[m.name])]


def summary_text(summary: dict) -> list[str]:
    """The paragraphs above the table: what was measured, on what, and with which budget."""
    lines = [
        f"Data: {summary['data']} ({summary['train_size']} training images), loss {summary['loss']}, mode {summary['mode']}."
    ]
    if summary.get("per_model") is not None:
        e, t, sh = summary.get("top_eigenvalues"), summary.get("trace"), summary.get("sharpness") or {}
        budget = [
            f"top eigenvalues by Lanczos ({e['n_hvp']} HVPs)" if e else "",
            f"trace by {t['method']} ({t['n_hvp']} HVPs)" if t else "",
            ", ".join(f"{k} radius {ms.fmt(v['radius'])}" for k, v in sh.items()),
        ]
        lines.append(
            f"The {len(summary['per_model'])} trained models kept in {summary['run']}, measured as one ensemble: "
            + "; ".join(b for b in budget if b)
            + "."
        )
        if summary.get("skipped_diverged"):
            lines.append(f"Left out (diverged): {', '.join(summary['skipped_diverged'])}.")
    if summary.get("diverged"):
        lines.append(
            f"The model diverged ({summary['diverged']}): nothing was measured, and every measure is recorded "
            f"as not finite (null)."
        )
    if summary.get("failed"):
        lines.append(f"Failed measures (see measures/*.error.txt): {', '.join(summary['failed'])}")
    return lines


# --------------------------------------------------------------------------- figures


def write_figures(out: Path, summary: dict) -> list[tuple[str, Path]]:
    """figures/*.png of an analyze folder, from its summary: [(caption, path)]."""
    from ..experiments._base import pyplot
    from ..files import atomic_file

    plt = pyplot()
    figs = []

    def save(fig, name, caption):
        path = out / "figures" / name
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        figs.append((caption, path))

    if summary.get("per_model") is not None:
        _per_model_figures(summary, save, plt)
        return figs
    _one_model_figures(summary, save, plt)
    return figs


def _one_model_figures(summary: dict, save, plt) -> None:
    from ..analysis import Density, Plane, plot_density, plot_plane

    d = summary.get("density")
    if d and _drawable(d):
        dens = Density(ms.array(d["nodes"], 2), ms.array(d["weights"], 2), d["n_hvp"], d)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plot_density(dens, ax, label=f"{summary['model']} (n = {d['n_vectors']} vectors)")
        save(fig, "density.png", "Hessian spectral density (stochastic Lanczos quadrature)")
    p = summary.get("plane")
    if p:
        plane = Plane(p["alphas"], p["betas"], ms.array(p["loss"], 2), (None, None), p)
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
        plot_plane(
            plane, ax, title=f"{summary['model']}: loss on a filter-normalised plane ({len(p['alphas'])}×{len(p['betas'])})"
        )
        save(fig, "plane.png", "Loss plane (Li et al. 2018), the model at the centre")
    s = summary.get("sharpness")
    if s:
        rows = [
            [
                k,
                ms.fmt(v["value"]),
                ms.fmt(v["radius"]),
                ms.fmt(v["loss"]),
                ms.fmt(v["max_loss"]),
                "" if not v.get("ci") else f"[{ms.fmt(v['ci'][0])}, {ms.fmt(v['ci'][1])}]",
            ]
            for k, v in s.items()
        ]
        fig, ax = plt.subplots(figsize=(9, 0.6 + 0.35 * len(rows)))
        ax.axis("off")
        table = ax.table(
            cellText=rows,
            colLabels=["kind", "sharpness", "radius", "loss", "max / mean loss", "95% interval"],
            loc="center",
            colWidths=[0.12, 0.13, 0.1, 0.12, 0.18, 0.35],
        )
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        ax.set_title(f"{summary['model']}: sharpness", fontsize=10)
        save(fig, "sharpness.png", FIGURE_CAPTIONS["sharpness.png"])


def _per_model_figures(summary: dict, save, plt) -> None:
    """A run's kept models: the density of each (one line per model) and the planes of the first
    SHOWN_MODELS, each in its own panel (the table is in the report)."""
    from ..analysis import Density, Plane, plot_plane

    rows = summary["per_model"]
    d = summary.get("density")
    if d:
        fig, ax = plt.subplots(figsize=(8, 4))
        for m in rows:
            if not _drawable(m["density"]):
                continue
            dens = Density(ms.array(m["density"]["nodes"], 2), ms.array(m["density"]["weights"], 2), d["n_hvp"], d)
            grid, y = dens.curve()
            ax.plot(grid.numpy(), y.clamp_min(1e-12).numpy(), lw=1, label=m["label"])
        ax.set(yscale="log", xlabel="eigenvalue λ", ylabel="density (Gaussian-smoothed)")
        ax.set_ylim(bottom=1e-6)  # the Gaussian tails below say nothing
        ax.set_title(
            f"Hessian spectral density of each kept model (SLQ, {d['n_vectors']} vectors × {d['steps']} steps)", fontsize=9
        )
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
        save(
            fig, "density.png", "Hessian spectral density of each kept model (stochastic Lanczos quadrature), one line per model"
        )
    if summary.get("plane"):
        shown = rows[:SHOWN_MODELS]
        cols = min(3, len(shown))
        fig, axes = plt.subplots(
            (len(shown) + cols - 1) // cols,
            cols,
            figsize=(4.6 * cols, 3.9 * ((len(shown) + cols - 1) // cols)),
            squeeze=False,
            layout="constrained",
        )
        for ax, m in zip(axes.flat, shown):
            p = m["plane"]
            plot_plane(
                Plane(p["alphas"], p["betas"], ms.array(p["loss"], 2), (None, None), summary["plane"]), ax, title=m["label"]
            )
        for ax in list(axes.flat)[len(shown) :]:
            ax.axis("off")
        more = f" (the first {len(shown)} of {len(rows)}; all in summary.json)" if len(rows) > len(shown) else ""
        save(fig, "plane.png", f"Loss plane (Li et al. 2018) around each kept model{more}, the model at the centre")


def _drawable(density: dict) -> bool:
    """Whether a density's nodes and weights are all finite (a diverged one has nothing to draw)."""
    import torch

    return bool(torch.isfinite(ms.array(density["nodes"], 2)).all() and torch.isfinite(ms.array(density["weights"], 2)).all())


# --------------------------------------------------------------------------- blocks and the folder's own report


def blocks(
    summary: dict, figures: list[Figure], caption: str = "Curvature, sharpness and loss plane, per measure or per model"
) -> list:
    """The folder's text, table and figures as report blocks."""
    head, rows = summary_table(summary)
    return [("p", text) for text in summary_text(summary)] + [Table(head, [cells(r) for r in rows], caption=caption), *figures]


def render(out: Path, summary: dict) -> list[Path]:
    """The figures and report.md / report.html of an analyze folder, from its summary, through the
    report's renderers."""
    from ..files import write_text_atomic
    from .render_html import to_html
    from .render_md import to_markdown

    figures = [Figure("", path.name, path.read_bytes(), caption) for caption, path in write_figures(out, summary)]
    page = [("h1", f"dlscope analyze: {summary['model']}", "top"), *blocks(summary, figures)]
    write_text_atomic(out / "report.md", to_markdown(page))
    write_text_atomic(out / "report.html", to_html(page))
    return [out / "report.md", out / "report.html"]


def render_folder(folder: Path) -> list[Path]:
    """`dlscope report` on an analyze folder: its figures and report again, from its summary read
    as data. RunFolderError (one line) if the summary is damaged or a folder of it is a link."""
    from ..store import RunFolderError, RunStore

    RunStore.folder(folder, SUBFOLDERS, "dlscope analyze").check_folders()
    summary, damaged = read_summary(folder)
    if damaged:
        raise RunFolderError(f"{folder} is damaged ({'; '.join(damaged)}); run dlscope analyze again to write it anew")
    return render(folder, summary)
