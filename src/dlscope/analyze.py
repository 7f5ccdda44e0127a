"""`dlscope analyze`: curvature, sharpness and the loss plane of any model, as a run folder.

    dlscope analyze --model mymodels:build_cnn [--weights w.pt] --data cifar10 --train-size 1000 --out DIR

MODULE:FACTORY is imported from the current folder or PYTHONPATH; FACTORY() must return an
nn.Module for the data's images ([B, 3, 32, 32] for cifar10, [B, 1, 32, 32] for mnist). Weights
are read with torch.load(weights_only=True): a state dict, or a dict holding one under
"state_dict" or "model". The folder holds:

    config.json               the settings (a rerun with other settings is refused)
    measures/<name>.json      each finished measure; present = done, skipped on resume
    measures/<name>.error.txt a failed measure's error (run again on resume)
    summary.json              top_eigenvalues, trace, sharpness, plane, density (null if not run)
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
    p.add_argument("--model", required=True, metavar="MODULE:FACTORY", help="a function returning your nn.Module")
    p.add_argument("--weights", default=None, help="a state dict saved with torch.save (read with weights_only=True)")
    p.add_argument("--data", required=True, choices=["cifar10", "mnist"])
    p.add_argument("--train-size", type=int, default=1000, help="training images measured on (balanced subset)")
    p.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    p.add_argument("--out", required=True)
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


def run(args) -> int:
    from . import data as datasets
    from .experiments.base import ConfigError
    from .store import write_json

    out = Path(args.out)
    config = {k: getattr(args, k) for k in ("model", "weights", "data", "train_size", "loss", "mode", "seed", "k", "trace_hvp",
                                             "density_vectors", "density_steps", "sharpness_steps", "plane_steps")}
    config["weights"] = str(Path(args.weights).resolve()) if args.weights else None
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
        print(f"{name}: {_one_line(name, results[name])}")

    summary = {"model": args.model, "data": args.data, "train_size": args.train_size, "loss": args.loss, "mode": args.mode,
               **{m: results.get(m) for m in MEASURES}, "failed": failed}
    write_json(out / "summary.json", summary)
    figures = write_figures(out, summary)
    write_report(out, summary, figures)
    print(f"-> {out}")
    return 1 if failed else 0


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


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def markdown_section(summary: dict, figures: list[tuple[str, Path]], out: Path) -> str:
    """The analyze run as Markdown (figures linked relative to out): also what a study report can include."""
    lines = [f"# dlscope analyze: {summary['model']}", "",
             f"Data: {summary['data']} ({summary['train_size']} training images), loss {summary['loss']}, mode {summary['mode']}.", ""]
    e, t = summary.get("top_eigenvalues"), summary.get("trace")
    lines += ["| measure | value | certificate |", "|---|---|---|"]
    if e:
        lines.append(f"| top eigenvalues | {', '.join(_fmt(v) for v in e['values'])} | Lanczos, {e['n_hvp']} HVPs, converged {e['converged']} |")
    if t:
        lines.append(f"| Hessian trace | {_fmt(t['value'])} | 95% [{_fmt(t['ci'][0])}, {_fmt(t['ci'][1])}], {t['n_hvp']} HVPs ({t['method']}) |")
    for kind, s in (summary.get("sharpness") or {}).items():
        cert = f"95% [{_fmt(s['ci'][0])}, {_fmt(s['ci'][1])}], {s['steps']} draws" if s.get("ci") else f"best of {s['steps']} ascent steps (a lower bound)"
        lines.append(f"| sharpness ({kind}, radius {_fmt(s['radius'])}) | {_fmt(s['value'])} | {cert} |")
    p = summary.get("plane")
    if p:
        c = len(p["alphas"]) // 2
        lines.append(f"| loss plane | centre {_fmt(p['loss'][c][c])} | {len(p['alphas'])}×{len(p['betas'])} grid, span ±{p['span']} |")
    if summary.get("failed"):
        lines += ["", f"Failed measures (see measures/*.error.txt): {', '.join(summary['failed'])}"]
    lines.append("")
    for caption, path in figures:
        lines += [f"![{caption}]({path.relative_to(out)})", ""]
    return "\n".join(lines)


def write_report(out: Path, summary: dict, figures: list[tuple[str, Path]]) -> list[Path]:
    """report.md (figures linked) and report.html (figures embedded, text escaped)."""
    from .files import write_text_atomic

    md = markdown_section(summary, figures, out)
    write_text_atomic(out / "report.md", md)
    body = []
    for line in md.splitlines():
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("|---"):
            continue
        elif line.startswith("| measure"):
            body.append("<table border=1 cellpadding=4><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in line.strip("|").split("|")) + "</tr>")
        elif line.startswith("| "):
            body.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|")) + "</tr>")
        elif line.startswith("!["):
            continue
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    if any(b.startswith("<table") for b in body):
        last_row = max(i for i, b in enumerate(body) if b.startswith("<tr>"))
        body.insert(last_row + 1, "</table>")
    for caption, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    page = "<!doctype html><meta charset=utf-8><title>dlscope analyze</title>\n" + "\n".join(body) + "\n"
    write_text_atomic(out / "report.html", page)
    return [out / "report.md", out / "report.html"]
