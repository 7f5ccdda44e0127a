"""The curvature measures, each declared once, and the one list of them (Cockpit's presets are
the model) that the study's curvature measurement, `dlscope analyze` and the curvature figures
all read.

A measure is a `Measure`: its name, a function (model, data, budget) -> result (a JSON-able dict,
one entry per member for an ensemble), and the columns one member's result gives (numbers for
tables, metrics and figure panels, with their labels). Everything else has a default that fits a
measure with one number per member:

    def my_measure(model, data, b: Budget) -> dict:        # one function ...
        return {"value": grad_norm(model, data, b.loss, b.mode, b.batch_size)}

    MEASURES = [..., Measure("grad_norm", my_measure, labels={"grad_norm": "gradient norm"})]  # ... one entry

The study measures the list's entries with study=True (measure_members, on the members of an
ensemble), `dlscope analyze` measures those the user names (all by default), and
curvature_figure draws one panel per labelled column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .curvature import spectral_density, top_eigenvalues, trace
from .objective import LossArg
from ..findings import finite_or_none
from .plane import loss_plane
from .sharpness_measures import KINDS as SHARPNESS_KINDS
from .sharpness_measures import sharpness

# --------------------------------------------------------------------------- numbers


def fmt(v) -> str:
    """A number in four significant digits; None (not finite) as n/a."""
    return "n/a" if v is None else f"{v:.4g}"


def _pick(v, i: int | None):
    """Member i's entry of a per-member field (the field itself for one model, i None)."""
    return v if i is None else v[i]


def _floats(v):
    """Nested lists of JSON numbers with null (not finite) as NaN; ValueError for anything else."""
    if isinstance(v, list):
        return [_floats(x) for x in v]
    if v is None:
        return math.nan
    if type(v) in (int, float):
        return float(v)
    raise ValueError(f"a {type(v).__name__} where a number belongs")


def array(v, dims: int, n: int | None = None) -> torch.Tensor:
    """v as a float64 tensor of `dims` dimensions (one more, of length n, per model for an
    ensemble); ValueError if it is not a rectangular nested list of numbers of that shape."""
    t = torch.tensor(_floats(v), dtype=torch.float64)
    want = dims + (n is not None)
    if t.dim() != want or (n is not None and t.shape[0] != n) or (dims and t.numel() == 0):
        raise ValueError(f"not {want}-dimensional{f' with {n} models' if n is not None else ''}")
    return t


def is_number(v) -> bool:
    return v is None or type(v) in (int, float)


def is_count(v) -> bool:
    return type(v) is int and v >= 0


def _flags(v, n) -> bool:
    return type(v) is bool if n is None else isinstance(v, list) and len(v) == n and all(type(b) is bool for b in v)


def _interval(v, n) -> None:
    if array(v, 1, n).shape[-1] != 2:
        raise ValueError("an interval is two numbers")


# --------------------------------------------------------------------------- the declaration


@dataclass(frozen=True)
class Budget:
    """How every measure is run: the loss and mode, and each measure's budget. The study and
    `dlscope analyze` each fill one from their settings (the defaults are the library's)."""

    loss: LossArg = "ce"
    mode: str = "eval"
    batch_size: int | None = None
    seed: int = 0
    k: int = 1  # top eigenvalues
    tol: float = 1e-3  # Lanczos tolerance (Ritz residuals)
    max_steps: int = 100  # Lanczos steps at most
    trace_hvp: int = 99  # Hutch++ budget
    sharpness_kinds: tuple[str, ...] = SHARPNESS_KINDS
    sharpness_steps: int = 20
    radius: float | None = None  # sharpness radius (None: each kind's default)
    density_vectors: int = 5
    density_steps: int = 60
    plane_steps: int = 21

    @property
    def common(self) -> dict:
        return {"loss": self.loss, "mode": self.mode, "batch_size": self.batch_size}


@dataclass(frozen=True)
class Measure:
    """One measure. Only name and compute are needed for a measure with one number per member,
    whose result is {"value": number, or one per member}; the other fields say how the result is
    split, checked, shown and drawn when that default does not fit."""

    name: str  # the result's key (summary.json, measures/NAME.json of dlscope analyze)
    compute: Callable  # (model, data, Budget) -> dict, JSON-able; per-member lists for an ensemble
    labels: dict[str, str] = field(default_factory=dict)  # the drawn columns -> label (figure panel, table head)
    study: bool = True  # measured by the study, of every trained model
    columns: Callable | None = None  # (result, i) -> member i's {column: value} (i None: one model)
    fields: Callable | None = None  # (Budget) -> the columns a member's row carries, in order
    per_member: tuple[str, ...] = ("value",)  # the result's fields that hold one entry per member
    member: Callable | None = None  # (result, i) -> member i's part of the result
    check: Callable | None = None  # (result, n) -> True if well formed (ValueError for a bad array)
    line: Callable | None = None  # (result) -> one line of text
    rows: Callable | None = None  # (result) -> [[what, value, certificate]] for one model's table
    cells: Callable | None = None  # (result, i) -> [(head, text)] for member i's row of a table
    describe: Callable | None = None  # (Budget, images) -> the budget in a few words
    extras: Callable | None = None  # (result) -> run-level fields the study keeps (e.g. steps taken)
    run_extras: tuple[str, ...] = ()  # their names
    member_extras: tuple[str, ...] = ()  # per-member fields beyond the row's (e.g. converged)

    def labels_for(self, budget: Budget) -> dict[str, str]:
        return {c: label for c, label in self.labels.items() if c in self.row_fields(budget)}

    def row_fields(self, budget: Budget) -> tuple[str, ...]:
        return tuple(self.fields(budget)) if self.fields else (self.name,)

    def member_columns(self, r: dict, i: int | None) -> dict:
        if self.columns:
            return self.columns(r, i)
        return {self.name: finite_or_none(_pick(r["value"], i))}

    def member_of(self, r: dict, i: int) -> dict:
        if self.member:
            return self.member(r, i)
        return {k: (v[i] if k in self.per_member else v) for k, v in r.items()}

    def is_well_formed(self, r: dict, n: int | None) -> bool:
        if self.check:
            return self.check(r, n)
        array(r.get("value"), 0, n)
        return True

    def one_line(self, r: dict) -> str:
        if self.line:
            return self.line(r)
        v = r["value"]
        return f"{self.name} = " + (", ".join(fmt(x) for x in v) if isinstance(v, list) else fmt(v))

    def table_rows(self, r: dict) -> list[list[str]]:
        if self.rows:
            return self.rows(r)
        return [
            [self.labels.get(c, c), fmt(v) if not isinstance(v, list) else str(v), ""]
            for c, v in self.member_columns(r, None).items()
        ]

    def table_cells(self, r: dict, i: int) -> list[tuple[str, str]]:
        if self.cells:
            return self.cells(r, i)
        return [(self.labels.get(c, c), fmt(v)) for c, v in self.member_columns(r, i).items() if c in self.labels]


# --------------------------------------------------------------------------- the measures


def _top_eigenvalues(model, data, b: Budget) -> dict:
    return top_eigenvalues(model, data, k=b.k, tol=b.tol, max_steps=b.max_steps, seed=b.seed, **b.common).to_dict()


def _trace(model, data, b: Budget) -> dict:
    return trace(model, data, n_hvp=b.trace_hvp, seed=b.seed, **b.common).to_dict()


def _density(model, data, b: Budget) -> dict:
    return spectral_density(model, data, n_vectors=b.density_vectors, steps=b.density_steps, seed=b.seed, **b.common).to_dict()


def _sharpness(model, data, b: Budget) -> dict:
    return {
        kind: sharpness(model, data, kind=kind, radius=b.radius, steps=b.sharpness_steps, seed=b.seed, **b.common).to_dict()
        for kind in b.sharpness_kinds
    }


def _plane(model, data, b: Budget) -> dict:
    return loss_plane(model, data, steps=b.plane_steps, seed=b.seed, **b.common).to_dict()


def _check_eigs(r, n):
    array(r.get("values"), 1, n)
    return _flags(r.get("converged"), n) and is_count(r.get("n_hvp"))


def _check_trace(r, n):
    array(r.get("value"), 0, n)
    _interval(r.get("ci"), n)
    return is_count(r.get("n_hvp")) and isinstance(r.get("method"), str)


def _check_density(r, n):
    nodes, weights = array(r.get("nodes"), 2, n), array(r.get("weights"), 2, n)
    return nodes.shape == weights.shape and all(is_count(r.get(k)) for k in ("n_hvp", "n_vectors", "steps"))


def _check_sharpness(r, n):
    ok = bool(r) and set(r) <= set(SHARPNESS_KINDS) and all(isinstance(v, dict) for v in r.values())
    for v in r.values() if ok else ():
        for key in ("value", "loss", "max_loss"):
            array(v.get(key), 0, n)
        if v.get("ci") is not None:
            _interval(v["ci"], n)
        ok = ok and is_number(v.get("radius")) and is_count(v.get("steps"))
    return ok


def _check_plane(r, n):
    alphas, betas = array(r.get("alphas"), 1), array(r.get("betas"), 1)
    loss = array(r.get("loss"), 2, n)
    return (
        loss.shape[-2:] == (len(alphas), len(betas)) and len(alphas) % 2 == 1 and len(betas) % 2 == 1 and is_number(r.get("span"))
    )


def _ci_text(ci) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _trace_ci(ci):
    lo, hi = finite_or_none(ci[0]), finite_or_none(ci[1])
    return [lo, hi] if lo is not None and hi is not None else None


def _sharpness_member(r, i):
    return {
        kind: {
            "value": v["value"][i],
            "radius": v["radius"],
            "loss": v["loss"][i],
            "max_loss": v["max_loss"][i],
            "steps": v["steps"],
            "ci": v["ci"][i] if v.get("ci") else None,
        }
        for kind, v in r.items()
    }


def _sharpness_rows(r):
    rows = []
    for kind, sh in r.items():
        cert = (
            f"95% {_ci_text(sh['ci'])}, {sh['steps']} draws"
            if sh.get("ci")
            else f"best of {sh['steps']} ascent steps (a lower bound)"
        )
        rows.append([f"sharpness ({kind}, radius {fmt(sh['radius'])})", fmt(sh["value"]), cert])
    return rows


def _plane_centre(loss) -> str:
    c = len(loss) // 2
    return fmt(loss[c][c])


SHARPNESS_LABELS = {
    "keskar": "Keskar ε-sharpness (%)",
    "sam": "SAM sharpness",
    "adaptive": "adaptive sharpness",
    "average": "average sharpness",
}

MEASURES: list[Measure] = [
    Measure(
        "top_eigenvalues",
        _top_eigenvalues,
        labels={"top_eigenvalue": "top Hessian eigenvalue λ₁"},
        fields=lambda b: ("top_eigenvalue",),
        columns=lambda r, i: {
            "top_eigenvalue": finite_or_none(_pick(r["values"], i)[0]),
            "converged": bool(_pick(r["converged"], i)),
        },
        per_member=("values", "converged"),
        member=lambda r, i: {"values": r["values"][i], "converged": r["converged"][i], "n_hvp": r["n_hvp"]},
        check=_check_eigs,
        line=lambda r: "λ = " + ", ".join(fmt(v) for v in r["values"]),
        rows=lambda r: [
            ["top eigenvalues", ", ".join(fmt(v) for v in r["values"]), f"Lanczos, {r['n_hvp']} HVPs, converged {r['converged']}"]
        ],
        cells=lambda r, i: [("top eigenvalues", ", ".join(fmt(v) for v in r["values"][i]))],
        describe=lambda b: f"top Hessian eigenvalue by Lanczos (tol {b.tol:g}, <= {b.max_steps} steps)",
        extras=lambda r: {"lanczos_steps": r["n_hvp"]},
        run_extras=("lanczos_steps",),
        member_extras=("converged",),
    ),
    Measure(
        "trace",
        _trace,
        labels={"trace": "Hessian trace"},
        fields=lambda b: ("trace", "trace_ci"),
        columns=lambda r, i: {"trace": finite_or_none(_pick(r["value"], i)), "trace_ci": _trace_ci(_pick(r["ci"], i))},
        per_member=("value", "ci"),
        member=lambda r, i: {"value": r["value"][i], "ci": r["ci"][i], "n_hvp": r["n_hvp"], "method": r["method"]},
        check=_check_trace,
        line=lambda r: f"{fmt(r['value'])}  95% {_ci_text(r['ci'])}  ({r['n_hvp']} HVPs, {r['method']})",
        rows=lambda r: [["Hessian trace", fmt(r["value"]), f"95% {_ci_text(r['ci'])}, {r['n_hvp']} HVPs ({r['method']})"]],
        cells=lambda r, i: [("Hessian trace [95%]", f"{fmt(r['value'][i])} {_ci_text(r['ci'][i])}")],
        describe=lambda b: f"Hessian trace by Hutch++ ({b.trace_hvp} Hessian-vector products, 95% interval)",
    ),
    Measure(
        "density",
        _density,
        study=False,
        fields=lambda b: (),
        columns=lambda r, i: {},
        per_member=("nodes", "weights"),
        member=lambda r, i: {"nodes": r["nodes"][i], "weights": r["weights"][i]},
        check=_check_density,
        line=lambda r: f"{r.get('n_vectors')} vectors × {r.get('steps')} steps",
        rows=lambda r: [],
        cells=lambda r, i: [],
    ),
    Measure(
        "sharpness",
        _sharpness,
        labels=SHARPNESS_LABELS,
        fields=lambda b: tuple(b.sharpness_kinds),
        columns=lambda r, i: {kind: finite_or_none(_pick(v["value"], i)) for kind, v in r.items()},
        member=_sharpness_member,
        check=_check_sharpness,
        line=lambda r: "  ".join(f"{k} {fmt(v['value'])}" for k, v in r.items()),
        rows=_sharpness_rows,
        cells=lambda r, i: [(f"sharpness {k}", fmt(v["value"][i])) for k, v in r.items()],
        describe=lambda b: (
            f"Keskar ε-sharpness (ε = {b.radius:g}, best of {b.sharpness_steps} ascent steps: a lower bound)"
            if tuple(b.sharpness_kinds) == ("keskar",)
            else f"sharpness ({', '.join(b.sharpness_kinds)}; {b.sharpness_steps} steps)"
        ),
    ),
    Measure(
        "plane",
        _plane,
        study=False,
        fields=lambda b: (),
        columns=lambda r, i: {},
        per_member=("loss",),
        member=lambda r, i: {"alphas": r["alphas"], "betas": r["betas"], "loss": r["loss"][i]},
        check=_check_plane,
        line=lambda r: f"{len(r['alphas'])}×{len(r['betas'])} grid",
        rows=lambda r: [
            [
                "loss plane",
                f"centre {_plane_centre(r['loss'])}",
                f"{len(r['alphas'])}×{len(r['betas'])} grid, span ±{r['span']}",
            ]
        ],
        cells=lambda r, i: [("plane centre loss", _plane_centre(r["loss"][i]))],
    ),
]
BY_NAME = {m.name: m for m in MEASURES}
NAMES = tuple(BY_NAME)


def study_measures() -> list[Measure]:
    return [m for m in MEASURES if m.study]


# --------------------------------------------------------------------------- the study's measurement of an ensemble


@dataclass
class _Members:
    """Some members of an ensemble (duck-typed as analysis.objective reads one)."""

    module: object
    params: dict
    buffers: dict
    mode: str = "eval"


def study_fields(budget: Budget) -> tuple[str, ...]:
    """The columns a trained model's row carries, in order (e.g. top_eigenvalue, trace, trace_ci, keskar)."""
    return tuple(c for m in study_measures() for c in m.row_fields(budget))


def panels(budget: Budget) -> list[tuple[str, str]]:
    """(column, label) of every drawn column of the study's measures: one panel each."""
    return [(c, label) for m in study_measures() for c, label in m.labels_for(budget).items()]


def measure_members(ens, data: tuple[torch.Tensor, torch.Tensor], budget: Budget, skip: list[bool], active: bool = True) -> dict:
    """Every study measure of every member of `ens` (an engine.Ensemble) not in `skip` (a diverged
    one): {column: one entry per member, None where skipped}, plus each measure's run-level extras
    and "samples". An error in the measures is recorded in "error", never raised: the training
    behind it is kept. active False: nothing is measured (every entry None)."""
    n = ens.n
    measures = study_measures()
    out: dict = {c: [None] * n for c in study_fields(budget)}
    for m in measures:
        for extra in m.member_extras:
            out[extra] = [None] * n
        out.update(dict.fromkeys(m.run_extras))
    out["samples"] = len(data[0])
    keep = [i for i in range(n) if not skip[i]]
    if not keep or not active:
        return out
    idx = torch.tensor(keep, device=next(iter(ens.params.values())).device)
    sub = _Members(
        ens.module, {k: v.detach()[idx] for k, v in ens.params.items()}, {k: v[idx] for k, v in ens.buffers.items()}, ens.mode
    )
    try:
        results = [(m, m.compute(sub, data, budget)) for m in measures]
    except Exception as e:  # noqa: BLE001 (a failed measure must not cost the models trained before it)
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    for m, r in results:
        if m.extras:
            out.update(m.extras(r))
        for j, i in enumerate(keep):
            for c, v in m.member_columns(r, j).items():
                out[c][i] = v
    return out


def member_fields(curv: dict | None, i: int, prefix: str = "", budget: Budget | None = None) -> dict:
    """Member i's row columns (with a prefix such as "a_"); None everywhere if nothing was measured
    (an older run)."""
    curv = curv or {}
    fields = study_fields(budget or Budget(sharpness_kinds=STUDY_SHARPNESS))
    return {f"{prefix}{k}": (curv.get(k) or [None] * (i + 1))[i] for k in fields}


def describe(budget: Budget) -> str:
    """The study measures' budgets, joined."""
    return "; ".join(m.describe(budget) if m.describe else m.name for m in study_measures())


# --------------------------------------------------------------------------- the curvature figure


def _quartiles(runs: list[list[float]]):
    t = torch.tensor(runs, dtype=torch.float64)
    q = torch.nanquantile(t, torch.tensor([0.5, 0.25, 0.75], dtype=torch.float64), dim=0)
    return q[0].numpy(), q[1].numpy(), q[2].numpy()


def curvature_figure(
    groups: list[tuple], panel_list: list[tuple[str, str]], style: str = "band", xlabel: str = "", suptitle: str = ""
):
    """The one curvature figure: a row per group, a panel per (column, label) of panel_list (see
    panels). A group is (title, x positions, x tick labels or None, runs): runs is a list (one per
    seed or replicate) of rows, one per x, each a dict of columns (what is not a number is a gap).
    Each panel draws every run as a grey line and the median over runs with its interquartile
    range: as a band on a log x axis (style "band") or as dots with bars (style "dots"). Returns
    the figure."""
    import matplotlib.pyplot as plt

    cols = len(panel_list)
    fig, axes = plt.subplots(len(groups), cols, figsize=(4.3 * cols, 3.6 * len(groups)), layout="constrained", squeeze=False)
    for row_axes, (title, xs, ticks, runs) in zip(axes, groups):
        for ax, (key, label) in zip(row_axes, panel_list):
            vals = [[_drawn(r.get(key)) for r in run] for run in runs]
            n = sum(any(v == v for v in run) for run in vals)
            for run in vals:
                ax.plot(xs, run, "-", color="lightgray", lw=1)
            med, lo, hi = _quartiles(vals)
            if style == "dots":
                ax.errorbar(
                    xs, med, yerr=[med - lo, hi - med], fmt="o", color="tab:purple", capsize=4, label=f"median, IQR (n={n})"
                )
                ax.set_xlim(min(xs) - 0.4, max(xs) + 0.4)
            else:
                ax.fill_between(xs, lo, hi, color="tab:purple", alpha=0.2, lw=0)
                ax.plot(xs, med, "o-", color="tab:purple", label=f"median, IQR (n={n})")
                ax.set_xscale("log")
                ax.minorticks_off()
            ax.set_xticks(xs, ticks or [f"{v:g}" for v in xs])
            ax.set(xlabel=xlabel, ylabel=label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        if title:
            row_axes[0].set_title(title, fontsize=9, loc="left")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return fig


def _drawn(v) -> float:
    return float(v) if type(v) in (int, float) else float("nan")


STUDY_SHARPNESS = ("keskar",)  # the study's sharpness: Keskar et al.'s, as they measured it


def study_budget(settings: dict) -> Budget:
    """The study's budget from its curvature settings (see experiments/_curvature.py SETTINGS)."""
    return Budget(
        loss="ce",
        seed=settings.get("seed", 0),
        k=1,
        tol=settings["curvature_tol"],
        max_steps=settings["curvature_max_steps"],
        trace_hvp=settings["trace_hvp"],
        sharpness_kinds=STUDY_SHARPNESS,
        sharpness_steps=settings["keskar_steps"],
        radius=settings["keskar_radius"],
    )


__all__ = ["Budget", "Measure", "MEASURES", "NAMES", "curvature_figure", "measure_members"]
