"""What the flatness experiments (interpolation, sensitivity) record of each trained model besides
its curves: its curvature and its final weights. A thin layer over analysis.measures, which
declares the measures and measures them.

Curvature: every measure of analysis.measures.MEASURES marked study=True (today the top Hessian
eigenvalue by Lanczos, the Hessian trace by Hutch++ with its 95% interval, and Keskar et al.'s
(2017) ε-sharpness), of the training loss (the model's own cross-entropy) on one fixed,
class-balanced subset of `curvature_samples` un-augmented training images, in evaluation mode.
All members of an ensemble are measured in one call of each measure; a diverged member is left
out and gets None. The settings here (SETTINGS, overridable per profile) are the study's budget.

Weights: each trained model's parameters and buffers, stacked per ensemble (tensors only, read
back with torch.load(weights_only=True)), so that `dlscope analyze --run DIR` can measure the
study's own models later with any budget.
"""

from __future__ import annotations

import torch

from ..analysis import measures as _measures
from ._base import ConfigError

SETTINGS = {
    "curvature_samples": 256,  # training images the measures use (0: measure nothing)
    "curvature_tol": 1e-2,  # Lanczos: stop when the top Ritz pair's residual is <= this × |λ1|
    "curvature_max_steps": 30,  # Lanczos steps at most (one Hessian-vector product each)
    "trace_hvp": 30,  # Hutch++ budget, in Hessian-vector products
    "keskar_radius": 1e-3,  # Keskar et al.'s ε
    "keskar_steps": 5,  # projected-ascent steps for the worst point in the box (a lower bound)
}
# The quick profile's budget (measured: it adds about a tenth to interpolation's and sensitivity's
# CPU time): 128 images, Lanczos to 1e-2 in <= 20 steps, 12 Hutch++ products, 3 ascent steps.
QUICK = {"curvature_samples": 128, "curvature_tol": 1e-2, "curvature_max_steps": 20, "trace_hvp": 12, "keskar_steps": 3}
# The columns each trained model's row gets (numbers drawn in the curvature figures and written to
# metrics.csv): read from the one list of measures, analysis.measures.MEASURES.
MEASURES = tuple(c for c, _ in _measures.panels(_measures.Budget(sharpness_kinds=_measures.STUDY_SHARPNESS)))


def validate(settings: dict) -> None:
    if settings["curvature_samples"] < 0:
        raise ConfigError("curvature_samples must be 0 (measure nothing) or more (at most the training set is used)")
    if not 0 < settings["curvature_tol"] < 1 or settings["curvature_max_steps"] < 2:
        raise ConfigError("curvature_tol must be in (0, 1) and curvature_max_steps >= 2")
    if settings["trace_hvp"] < 3 or settings["keskar_steps"] < 1 or not settings["keskar_radius"] > 0:
        raise ConfigError("trace_hvp must be >= 3, keskar_steps >= 1 and keskar_radius > 0")


def describe(settings: dict) -> str:
    """The measures and their budget in one line, for summary.json and the figures."""
    if settings["curvature_samples"] == 0:
        return "not measured (curvature_samples 0)"
    return (
        f"on {min(settings['curvature_samples'], settings['train_size'])} class-balanced training images (un-augmented), eval "
        f"mode, the training loss: {_measures.describe(_measures.study_budget(settings))}"
    )


def subset(settings: dict, train) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed images every model of the run is measured on (the same for every configuration)."""
    from ..data import balanced_subset

    idx = balanced_subset(train.y, settings["curvature_samples"]).to(train.x.device)
    return train.x[idx], train.y[idx]


def measure(ens, data: tuple[torch.Tensor, torch.Tensor], settings: dict, skip: list[bool]) -> dict:
    """Every study measure of analysis.measures (top eigenvalue, trace with its interval, Keskar
    sharpness) of every member of `ens` not in `skip` (a diverged one): see measure_members."""
    return _measures.measure_members(ens, data, _measures.study_budget(settings), skip, active=settings["curvature_samples"] > 0)


member_fields = _measures.member_fields


def figure(settings: dict, groups: list[tuple], style: str, title: str, xlabel: str = ""):
    """The curvature figure of the study's measures (analysis.measures.curvature_figure)."""
    panels = _measures.panels(_measures.study_budget(settings))
    return _measures.curvature_figure(groups, panels, style, xlabel, title)


def split(curv: dict, parts: list[slice]) -> list[dict]:
    """The measures of an ensemble split into the measures of consecutive groups of its members."""
    out = []
    for s in parts:
        out.append({k: (v[s] if isinstance(v, list) else v) for k, v in curv.items()})
    return out


def kept_weights(model: str, ens, labels: list[str], members: list[int] | None = None) -> dict:
    """The final weights of the members of `ens` (all, or those listed), on the CPU, as a trial
    result keeps them: {"model", "labels", "params": {name: [n, ...]}, "buffers": {...}}."""
    idx = list(range(ens.n)) if members is None else list(members)
    return {
        "model": model,
        "labels": list(labels),
        "params": {k: v.detach()[idx].cpu().clone() for k, v in ens.params.items()},
        "buffers": {k: v.detach()[idx].cpu().clone() for k, v in ens.buffers.items()},
    }


def join_weights(parts: list[dict]) -> dict:
    """Several kept_weights of one model stacked into one."""
    return {
        "model": parts[0]["model"],
        "labels": [lab for p in parts for lab in p["labels"]],
        "params": {k: torch.cat([p["params"][k] for p in parts]) for k in parts[0]["params"]},
        "buffers": {k: torch.cat([p["buffers"][k] for p in parts]) for k in parts[0]["buffers"]},
    }
