"""`dlscope analyze`: curvature, sharpness and the loss plane of any model, as a run folder.

    dlscope analyze --model mymodels:build_cnn [--weights w.pt] --data cifar10 --train-size 1000 --out DIR
    dlscope analyze --run RUN_DIR [--experiment interpolation] [--out DIR]

--run measures the trained models a finished study keeps (interpolation and sensitivity keep each
model's final weights in their trials/*.pt), all of them as one ensemble, on the data they were
trained on; --out defaults to RUN_DIR/analyze, where `dlscope report RUN_DIR` finds it.

MODULE:FACTORY is imported from the current folder or PYTHONPATH; FACTORY() must return an
nn.Module for the data's images ([B, 3, 32, 32] for cifar10, [B, 1, 32, 32] for mnist). Weights
are read with torch.load(weights_only=True): a state dict, or a dict holding one under
"state_dict" or "model". The folder holds:

    config.json               the settings (a rerun with other settings is refused)
    measures/<name>.json      each finished measure; present = done, skipped on resume
    measures/<name>.error.txt a failed measure's error (run again on resume)
    summary.json              top_eigenvalues, trace, sharpness, plane, density (null if not run);
                              with --run each holds one entry per model (in "models" order), and
                              "per_model" the same per model
    figures/density.png, figures/plane.png, figures/sharpness.png
    report.md, report.html    self-contained (figures embedded)
"""

from __future__ import annotations

import base64
import html
import importlib
import json
import math
import os
import sys
import traceback
from pathlib import Path

MEASURES = ("top_eigenvalues", "trace", "density", "sharpness", "plane")
SHARPNESS_KINDS = ("keskar", "sam", "adaptive", "average")


def add_arguments(p) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="MODULE:FACTORY", help="a function returning your nn.Module")
    which.add_argument("--run", metavar="RUN_DIR", help="a finished study's run folder: measure the trained models it kept")
    p.add_argument("--experiment", action="append", default=None, metavar="NAME",
                   help="with --run: only this experiment's models (repeatable; default: every experiment that kept some)")
    p.add_argument("--weights", default=None, help="a state dict saved with torch.save (read with weights_only=True)")
    p.add_argument("--data", default=None, choices=["cifar10", "mnist"], help="required with --model; with --run, the models' own")
    p.add_argument("--train-size", type=int, default=1000, help="training images measured on (balanced subset)")
    p.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    p.add_argument("--out", default=None, help="the output folder (required with --model; default with --run: RUN_DIR/analyze)")
    p.add_argument("--loss", default="ce", choices=["ce", "mse"])
    p.add_argument("--mode", default="eval", choices=["eval", "train"], help="batch norm / dropout mode (default eval)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=3, help="top eigenvalues to compute")
    p.add_argument("--trace-hvp", type=int, default=99, help="Hessian-vector products for the trace")
    p.add_argument("--density-vectors", type=int, default=5)
    p.add_argument("--density-steps", type=int, default=60)
    p.add_argument("--sharpness-steps", type=int, default=20)
    p.add_argument("--plane-steps", type=int, default=21)
    p.add_argument("--batch-size", type=int, default=500, help="examples per pass (memory only)")
    p.add_argument("--data-dir", default=None)


def load_factory(spec: str):
    from torch import nn

    from .experiments.base import ConfigError

    if spec.count(":") != 1:
        raise ConfigError(f"--model {spec!r}: expected MODULE:FACTORY, e.g. mymodels:build")
    mod_name, fn_name = spec.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"--model: cannot import {mod_name!r} from the current folder or PYTHONPATH ({e})") from e
    factory = getattr(module, fn_name, None)
    if not callable(factory):
        raise ConfigError(f"--model: {mod_name} has no function {fn_name!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model: {spec}() returned {type(model).__name__}, not an nn.Module")
    return model


def load_weights(model, path: str) -> None:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)  # data, never code
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    model.load_state_dict(state)


def _finite(obj):
    """JSON without NaN: a non-finite number is recorded as null (the measure diverged there)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _compute(name: str, model, data, args) -> dict:
    from . import analysis as an

    common = dict(loss=args.loss, mode=args.mode, batch_size=args.batch_size)
    if name == "top_eigenvalues":
        return an.top_eigenvalues(model, data, k=args.k, seed=args.seed, **common).to_dict()
    if name == "trace":
        return an.trace(model, data, n_hvp=args.trace_hvp, seed=args.seed, **common).to_dict()
    if name == "density":
        return an.spectral_density(model, data, n_vectors=args.density_vectors, steps=args.density_steps, seed=args.seed, **common).to_dict()
    if name == "sharpness":
        return {kind: an.sharpness(model, data, kind=kind, steps=args.sharpness_steps, seed=args.seed, **common).to_dict()
                for kind in SHARPNESS_KINDS}
    if name == "plane":
        return an.loss_plane(model, data, steps=args.plane_steps, seed=args.seed, **common).to_dict()
    raise ValueError(name)


def kept_models(run_dir: Path, only: list[str] | None = None) -> list[dict]:
    """The trained models a study's run folder keeps: [{"experiment", "trial", "model", "labels",
    "params", "buffers"}], one entry per trial that kept weights (experiments/curvature.py).
    run_dir is the study's folder or one experiment's folder. ConfigError (one line) when it holds
    no run, or no kept models."""
    from . import experiments
    from .experiments.base import ConfigError
    from .store import read_pt

    if not run_dir.is_dir():
        raise ConfigError(f"--run {run_dir}: no such folder")
    if (run_dir / "config.json").exists() and run_dir.name in experiments.names():
        folders = [run_dir]
    else:
        folders = [run_dir / n for n in experiments.names() if (run_dir / n / "config.json").exists()]
    if not folders:
        raise ConfigError(f"--run {run_dir}: holds no dlscope run (no experiment folder with a config.json)")
    if only:
        unknown = sorted(set(only) - {f.name for f in folders})
        if unknown:
            raise ConfigError(f"--experiment {', '.join(unknown)}: not in {run_dir} (it holds {', '.join(f.name for f in folders)})")
        folders = [f for f in folders if f.name in only]
    kept = []
    for folder in folders:
        for path in sorted((folder / "trials").glob("*.pt")):
            result = read_pt(path)  # tensors only: torch.load(weights_only=True)
            w = (result or {}).get("weights")
            if isinstance(w, dict) and isinstance(w.get("params"), dict) and w["params"]:
                kept.append({"experiment": folder.name, "trial": path.stem, **w})
    if not kept:
        raise ConfigError(f"--run {run_dir}: no trained models kept (interpolation and sensitivity keep their models' "
                          f"final weights in trials/*.pt, in runs made by this version); nothing to measure")
    return kept


def load_kept(kept: list[dict]):
    """One engine.Ensemble of every kept model that did not blow up, its labels, and the labels
    of those left out. All kept models must be of one zoo model."""
    import torch

    from . import models
    from .engine import Ensemble
    from .experiments.base import ConfigError, blown_up

    names = sorted({k["model"] for k in kept})
    if len(names) != 1:
        raise ConfigError(f"--run: the kept models are of several architectures ({', '.join(names)}); choose one with --experiment")
    params = {k: torch.cat([m["params"][k] for m in kept]) for k in kept[0]["params"]}
    buffers = {k: torch.cat([m["buffers"][k] for m in kept]) for k in kept[0]["buffers"]}
    labels = [f"{m['experiment']}: {lab}" for m in kept for lab in m["labels"]]
    ens = Ensemble(models.build(names[0]), params, buffers)
    bad = blown_up(ens)
    ok = [i for i, b in enumerate(bad) if not b]
    if not ok:
        raise ConfigError("--run: every kept model diverged (non-finite or exploded weights); nothing to measure")
    idx = torch.tensor(ok)
    ens = Ensemble(ens.module, {k: v[idx] for k, v in params.items()}, {k: v[idx] for k, v in buffers.items()})
    data = "cifar10" if models.info(names[0])["input_shape"] == (3, 32, 32) else "mnist"
    return ens, names[0], data, [labels[i] for i in ok], [labels[i] for i, b in enumerate(bad) if b]


def run(args) -> int:
    from . import data as datasets
    from .experiments.base import ConfigError
    from .store import write_json

    if args.model and (args.data is None or args.out is None):
        raise ConfigError("--model needs --data and --out")
    if args.run and (args.weights or args.data):
        raise ConfigError("--run measures the run's own models on their own data: drop --weights and --data")
    if args.experiment and not args.run:
        raise ConfigError("--experiment goes with --run")
    labels, skipped = None, []
    if args.run:
        kept = kept_models(Path(args.run), args.experiment)
        model, arch, args.data, labels, skipped = load_kept(kept)
    out = Path(args.out) if args.out else Path(args.run) / "analyze"
    config = {k: getattr(args, k) for k in ("model", "weights", "data", "train_size", "loss", "mode", "seed", "k", "trace_hvp",
                                             "density_vectors", "density_steps", "sharpness_steps", "plane_steps")}
    config["weights"] = str(Path(args.weights).resolve()) if args.weights else None
    if args.run:
        config.update(model=arch, run=str(Path(args.run).resolve()), experiment=sorted(args.experiment or []), models=labels)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != config:
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ConfigError(f"{out} was made with other settings ({', '.join(diff)}); use another --out")
    write_json(cfg_path, config)

    results, failed = {}, []
    todo = [m for m in args.measures if not (out / "measures" / f"{m}.json").exists()]
    if todo:  # (a finished folder is summarised again without loading anything)
        if not args.run:
            model = load_factory(args.model)
            if args.weights:
                load_weights(model, args.weights)
        split = datasets.load(args.data, "cpu", args.data_dir, train_size=args.train_size).train
        data = (split.x, split.y)
    for name in args.measures:
        path, err = out / "measures" / f"{name}.json", out / "measures" / f"{name}.error.txt"
        if name not in todo:
            results[name] = json.loads(path.read_text())
            print(f"{name}: done before, kept")
            continue
        try:
            results[name] = _finite(_compute(name, model, data, args))
        except Exception as e:  # one failing measure never loses the others
            from .files import write_text_atomic

            write_text_atomic(err, traceback.format_exc())
            failed.append(name)
            print(f"{name}: FAILED ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        write_json(path, results[name])
        if err.exists():
            err.unlink()
        print(f"{name}: {_one_line(name, results[name]) if labels is None else 'done'}")

    summary = {"model": config["model"], "data": args.data, "train_size": args.train_size, "loss": args.loss, "mode": args.mode,
               **{m: results.get(m) for m in MEASURES}, "failed": failed}
    if labels is not None:
        summary.update(run=config["run"], models=labels, skipped_diverged=skipped, per_model=per_model(results, labels))
    write_json(out / "summary.json", summary)
    render(out, summary)
    print(f"-> {out}")
    return 1 if failed else 0


def render(out: Path, summary: dict) -> list[Path]:
    """The figures and report.md / report.html of an analyze folder, from its summary."""
    figures = write_figures(out, summary)
    return write_report(out, summary, figures)


def is_analyze_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "summary.json").is_file() and (path / "measures").is_dir()


def per_model(results: dict, labels: list[str]) -> list[dict]:
    """An ensemble's results split per model: top_eigenvalues, trace, sharpness, plane (and density)."""
    out = []
    for i, label in enumerate(labels):
        m = {"label": label}
        e, t, s, p, d = (results.get(k) for k in ("top_eigenvalues", "trace", "sharpness", "plane", "density"))
        m["top_eigenvalues"] = {"values": e["values"][i], "converged": e["converged"][i], "n_hvp": e["n_hvp"]} if e else None
        m["trace"] = {"value": t["value"][i], "ci": t["ci"][i], "n_hvp": t["n_hvp"], "method": t["method"]} if t else None
        m["sharpness"] = ({kind: {"value": v["value"][i], "radius": v["radius"], "loss": v["loss"][i], "max_loss": v["max_loss"][i],
                                  "steps": v["steps"], "ci": v["ci"][i] if v.get("ci") else None} for kind, v in s.items()}
                          if s else None)
        m["plane"] = {"alphas": p["alphas"], "betas": p["betas"], "loss": p["loss"][i]} if p else None
        m["density"] = {"nodes": d["nodes"][i], "weights": d["weights"][i]} if d else None
        out.append(m)
    return out


def _one_line(name: str, r: dict) -> str:
    if name == "top_eigenvalues":
        return "λ = " + ", ".join(f"{v:.4g}" for v in r["values"] if v is not None)
    if name == "trace":
        return f"{r['value']:.4g}  95% [{r['ci'][0]:.4g}, {r['ci'][1]:.4g}]  ({r['n_hvp']} HVPs, {r['method']})"
    if name == "sharpness":
        return "  ".join(f"{k} {v['value']:.4g}" for k, v in r.items() if v["value"] is not None)
    if name == "plane":
        return f"{len(r['alphas'])}×{len(r['betas'])} grid"
    return f"{r.get('n_vectors')} vectors × {r.get('steps')} steps"


# --------------------------------------------------------------------------- figures and report


def write_figures(out: Path, summary: dict) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from .analysis import Density, Plane, plot_density, plot_plane
    from .files import atomic_file

    figs = []

    def save(fig, name, caption):
        path = out / "figures" / name
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        figs.append((caption, path))

    if summary.get("per_model") is not None:
        _per_model_figures(summary, save)
        return figs

    d = summary.get("density")
    if d:
        dens = Density(torch.tensor(d["nodes"], dtype=torch.float64), torch.tensor(d["weights"], dtype=torch.float64), d["n_hvp"], d)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plot_density(dens, ax, label=f"{summary['model']} (n = {d['n_vectors']} vectors)")
        save(fig, "density.png", "Hessian spectral density (stochastic Lanczos quadrature)")
    p = summary.get("plane")
    if p:
        plane = Plane(p["alphas"], p["betas"], torch.tensor([[float("nan") if v is None else v for v in row] for row in p["loss"]],
                                                             dtype=torch.float64), (None, None), p)
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
        plot_plane(plane, ax, title=f"{summary['model']}: loss on a filter-normalised plane ({len(p['alphas'])}×{len(p['betas'])})")
        save(fig, "plane.png", "Loss plane (Li et al. 2018), the model at the centre")
    s = summary.get("sharpness")
    if s:
        rows = [[k, _fmt(v["value"]), _fmt(v["radius"]), _fmt(v["loss"]), _fmt(v["max_loss"]),
                 "" if not v.get("ci") else f"[{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]"] for k, v in s.items()]
        fig, ax = plt.subplots(figsize=(9, 0.6 + 0.35 * len(rows)))
        ax.axis("off")
        table = ax.table(cellText=rows, colLabels=["kind", "sharpness", "radius", "loss", "max / mean loss", "95% interval"], loc="center",
                         colWidths=[0.12, 0.13, 0.1, 0.12, 0.18, 0.35])
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        ax.set_title(f"{summary['model']}: sharpness", fontsize=10)
        save(fig, "sharpness.png", "Sharpness (keskar: % rise in an ε-box; sam/adaptive: worst rise in a ball; average: mean rise)")
    return figs


FIGURE_CAPTIONS = {
    "density.png": "Hessian spectral density (stochastic Lanczos quadrature, Ghorbani et al. 2019); for a run's kept "
                   "models, one line per model.",
    "plane.png": "Loss on a 2-D filter-normalised plane (Li et al. 2018) with the model at the centre (red star).",
    "sharpness.png": "Sharpness (keskar: % rise in an ε-box; sam/adaptive: worst rise in a ball; average: mean rise).",
}
SHOWN_MODELS = 9  # planes drawn for a run's kept models: the first few (every number is in summary.json)


def _per_model_figures(summary: dict, save) -> None:
    """A run's kept models: the density of each (one line per model) and the planes of the first
    SHOWN_MODELS, each in its own panel (the table is in the report)."""
    import matplotlib.pyplot as plt
    import torch

    from .analysis import Density, Plane, plot_plane

    rows = summary["per_model"]
    d = summary.get("density")
    if d:
        fig, ax = plt.subplots(figsize=(8, 4))
        for m in rows:
            dens = Density(torch.tensor(m["density"]["nodes"], dtype=torch.float64),
                           torch.tensor(m["density"]["weights"], dtype=torch.float64), d["n_hvp"], d)
            grid, y = dens.curve()
            ax.plot(grid.numpy(), y.clamp_min(1e-12).numpy(), lw=1, label=m["label"])
        ax.set(yscale="log", xlabel="eigenvalue λ", ylabel="density (Gaussian-smoothed)")
        ax.set_ylim(bottom=1e-6)  # the Gaussian tails below say nothing
        ax.set_title(f"Hessian spectral density of each kept model (SLQ, {d['n_vectors']} vectors × {d['steps']} steps)", fontsize=9)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
        save(fig, "density.png", "Hessian spectral density of each kept model (stochastic Lanczos quadrature), one line per model")
    if summary.get("plane"):
        shown = rows[:SHOWN_MODELS]
        cols = min(3, len(shown))
        fig, axes = plt.subplots((len(shown) + cols - 1) // cols, cols, figsize=(4.6 * cols, 3.9 * ((len(shown) + cols - 1) // cols)),
                                 squeeze=False, layout="constrained")
        for ax, m in zip(axes.flat, shown):
            p = m["plane"]
            grid = torch.tensor([[float("nan") if v is None else v for v in r] for r in p["loss"]], dtype=torch.float64)
            plot_plane(Plane(p["alphas"], p["betas"], grid, (None, None), summary["plane"]), ax, title=m["label"])
        for ax in list(axes.flat)[len(shown):]:
            ax.axis("off")
        more = f" (the first {len(shown)} of {len(rows)}; all in summary.json)" if len(rows) > len(shown) else ""
        save(fig, "plane.png", f"Loss plane (Li et al. 2018) around each kept model{more}, the model at the centre")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def summary_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The measures as one table (head, rows of text): one row per measure for one model, one row
    per model for a run's kept models. Also what a study's report shows of it."""
    if summary.get("per_model") is not None:
        kinds = list(summary.get("sharpness") or {})
        head = ["model", "top eigenvalues", "Hessian trace [95%]", *[f"sharpness {k}" for k in kinds], "plane centre loss"]
        rows = []
        for m in summary["per_model"]:
            e, t, sh, p = m.get("top_eigenvalues"), m.get("trace"), m.get("sharpness") or {}, m.get("plane")
            c = len(p["alphas"]) // 2 if p else 0
            rows.append([m["label"], ", ".join(_fmt(v) for v in e["values"]) if e else "—",
                         f"{_fmt(t['value'])} [{_fmt(t['ci'][0])}, {_fmt(t['ci'][1])}]" if t else "—",
                         *[_fmt(sh[k]["value"]) if k in sh else "—" for k in kinds], _fmt(p["loss"][c][c]) if p else "—"])
        return head, rows
    rows = []
    e, t = summary.get("top_eigenvalues"), summary.get("trace")
    if e:
        rows.append(["top eigenvalues", ", ".join(_fmt(v) for v in e["values"]), f"Lanczos, {e['n_hvp']} HVPs, converged {e['converged']}"])
    if t:
        rows.append(["Hessian trace", _fmt(t["value"]), f"95% [{_fmt(t['ci'][0])}, {_fmt(t['ci'][1])}], {t['n_hvp']} HVPs ({t['method']})"])
    for kind, sh in (summary.get("sharpness") or {}).items():
        cert = (f"95% [{_fmt(sh['ci'][0])}, {_fmt(sh['ci'][1])}], {sh['steps']} draws" if sh.get("ci")
                else f"best of {sh['steps']} ascent steps (a lower bound)")
        rows.append([f"sharpness ({kind}, radius {_fmt(sh['radius'])})", _fmt(sh["value"]), cert])
    p = summary.get("plane")
    if p:
        c = len(p["alphas"]) // 2
        rows.append(["loss plane", f"centre {_fmt(p['loss'][c][c])}", f"{len(p['alphas'])}×{len(p['betas'])} grid, span ±{p['span']}"])
    return ["measure", "value", "certificate"], rows


def summary_text(summary: dict) -> list[str]:
    """The paragraphs above the table: what was measured, on what, and with which budget."""
    lines = [f"Data: {summary['data']} ({summary['train_size']} training images), loss {summary['loss']}, mode {summary['mode']}."]
    if summary.get("per_model") is not None:
        e, t, sh = summary.get("top_eigenvalues"), summary.get("trace"), summary.get("sharpness") or {}
        budget = [f"top eigenvalues by Lanczos ({e['n_hvp']} HVPs)" if e else "",
                  f"trace by {t['method']} ({t['n_hvp']} HVPs)" if t else "",
                  ", ".join(f"{k} radius {_fmt(v['radius'])}" for k, v in sh.items())]
        lines.append(f"The {len(summary['per_model'])} trained models kept in {summary['run']}, measured as one ensemble: "
                     + "; ".join(b for b in budget if b) + ".")
        if summary.get("skipped_diverged"):
            lines.append(f"Left out (diverged): {', '.join(summary['skipped_diverged'])}.")
    if summary.get("failed"):
        lines.append(f"Failed measures (see measures/*.error.txt): {', '.join(summary['failed'])}")
    return lines


def markdown_section(summary: dict, figures: list[tuple[str, Path]], out: Path) -> str:
    """The analyze run as Markdown (figures linked relative to out)."""
    lines = [f"# dlscope analyze: {summary['model']}", ""]
    for text in summary_text(summary):
        lines += [text, ""]
    head, rows = summary_table(summary)
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    lines.append("")
    for caption, path in figures:
        lines += [f"![{caption}]({path.relative_to(out)})", ""]
    return "\n".join(lines)


def write_report(out: Path, summary: dict, figures: list[tuple[str, Path]]) -> list[Path]:
    """report.md (figures linked) and report.html (figures embedded, text escaped)."""
    from .files import write_text_atomic

    write_text_atomic(out / "report.md", markdown_section(summary, figures, out))
    body = [f"<h1>{html.escape('dlscope analyze: ' + str(summary['model']))}</h1>"]
    body += [f"<p>{html.escape(t)}</p>" for t in summary_text(summary)]
    head, rows = summary_table(summary)
    body.append("<table border=1 cellpadding=4><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>")
    body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
    body.append("</table>")
    for caption, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    style = "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}</style>"
    page = f"<!doctype html><meta charset=utf-8><title>dlscope analyze</title>{style}\n" + "\n".join(body) + "\n"
    write_text_atomic(out / "report.html", page)
    return [out / "report.md", out / "report.html"]
