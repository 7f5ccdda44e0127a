"""What the flatness experiments (interpolation, sensitivity) record of each trained model besides
its curves: its curvature, measured by dlscope.analysis, and its final weights.

Curvature: the top Hessian eigenvalue (Lanczos), the Hessian trace (Hutch++, with its 95%
interval) and Keskar et al.'s (2017) ε-sharpness (the loss's worst rise in the box
|δ_i| ≤ ε(|θ_i| + 1), in % of 1 + loss), of the training loss (the model's own cross-entropy) on
one fixed, class-balanced subset of `curvature_samples` un-augmented training images, in
evaluation mode. All members of an ensemble are measured in one call of each measure (batched
Hessian-vector products); a diverged member is left out and gets None. The settings (SETTINGS,
overridable per profile) keep the cost small: a few hundred images, a loose Lanczos tolerance, a
modest Hutch++ budget and a few ascent steps.

Weights: each trained model's parameters and buffers, stacked per ensemble (tensors only, read
back with torch.load(weights_only=True)), so that `dlscope analyze --run DIR` can measure the
study's own models later with any budget.
"""

from __future__ import annotations

import math

import torch

from .base import ConfigError

SETTINGS = {
    "curvature_samples": 256,  # training images the measures use (0: measure nothing)
    "curvature_tol": 1e-2,  # Lanczos: stop when the top eigenvalue changes by <= this (relative)
    "curvature_max_steps": 30,  # Lanczos steps at most (one Hessian-vector product each)
    "trace_hvp": 30,  # Hutch++ budget, in Hessian-vector products
    "keskar_radius": 1e-3,  # Keskar et al.'s ε
    "keskar_steps": 5,  # projected-ascent steps for the worst point in the box (a lower bound)
}
# The quick profile's budget (measured: it adds about a tenth to interpolation's and sensitivity's
# CPU time): 128 images, Lanczos to 1e-2 in <= 20 steps, 12 Hutch++ products, 3 ascent steps.
QUICK = {"curvature_samples": 128, "curvature_tol": 1e-2, "curvature_max_steps": 20, "trace_hvp": 12, "keskar_steps": 3}
MEASURES = ("top_eigenvalue", "trace", "keskar")


def validate(cfg: dict) -> None:
    if cfg["curvature_samples"] < 0:
        raise ConfigError("curvature_samples must be 0 (measure nothing) or more (at most the training set is used)")
    if not 0 < cfg["curvature_tol"] < 1 or cfg["curvature_max_steps"] < 2:
        raise ConfigError("curvature_tol must be in (0, 1) and curvature_max_steps >= 2")
    if cfg["trace_hvp"] < 3 or cfg["keskar_steps"] < 1 or not cfg["keskar_radius"] > 0:
        raise ConfigError("trace_hvp must be >= 3, keskar_steps >= 1 and keskar_radius > 0")


def describe(cfg: dict) -> str:
    """The measures and their budget in one line, for summary.json and the figures."""
    if cfg["curvature_samples"] == 0:
        return "not measured (curvature_samples 0)"
    return (
        f"on {min(cfg['curvature_samples'], cfg['train_size'])} class-balanced training images (un-augmented), eval mode, the training "
        f"loss: top Hessian eigenvalue by Lanczos (tol {cfg['curvature_tol']:g}, <= {cfg['curvature_max_steps']} "
        f"steps); Hessian trace by Hutch++ ({cfg['trace_hvp']} Hessian-vector products, 95% interval); Keskar "
        f"ε-sharpness (ε = {cfg['keskar_radius']:g}, best of {cfg['keskar_steps']} ascent steps: a lower bound)"
    )


def subset(cfg: dict, train) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed images every model of the run is measured on (the same for every configuration)."""
    from ..data import balanced_subset

    idx = balanced_subset(train.y, cfg["curvature_samples"]).to(train.x.device)
    return train.x[idx], train.y[idx]


def measure(ens, data: tuple[torch.Tensor, torch.Tensor], cfg: dict, skip: list[bool]) -> dict:
    """Top eigenvalue, trace (with its interval) and Keskar sharpness of every member of `ens`
    (an engine.Ensemble) not in `skip` (a diverged one): lists with one entry per member, None
    where skipped. An error in the measures is recorded in "error", never raised: the training
    behind it is kept."""
    from .. import analysis
    from ..engine import Ensemble

    n = ens.n
    out: dict = {
        "top_eigenvalue": [None] * n,
        "trace": [None] * n,
        "trace_ci": [None] * n,
        "keskar": [None] * n,
        "lanczos_steps": None,
        "converged": [None] * n,
        "samples": len(data[0]),
    }
    keep = [i for i in range(n) if not skip[i]]
    if not keep or cfg["curvature_samples"] == 0:
        return out
    idx = torch.tensor(keep, device=next(iter(ens.params.values())).device)
    sub = Ensemble(
        ens.module, {k: v.detach()[idx] for k, v in ens.params.items()}, {k: v[idx] for k, v in ens.buffers.items()}, ens.mode
    )
    seed = cfg.get("seed", 0)
    try:
        eig = analysis.top_eigenvalues(
            sub, data, loss="ce", k=1, tol=cfg["curvature_tol"], max_steps=cfg["curvature_max_steps"], seed=seed
        )
        tr = analysis.trace(sub, data, loss="ce", n_hvp=cfg["trace_hvp"], seed=seed)
        sharp = analysis.sharpness(
            sub, data, loss="ce", kind="keskar", radius=cfg["keskar_radius"], steps=cfg["keskar_steps"], seed=seed
        )
    except Exception as e:  # noqa: BLE001 (a failed measure must not cost the models trained before it)
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    out["lanczos_steps"] = eig.n_hvp
    for j, i in enumerate(keep):
        out["top_eigenvalue"][i] = _num(eig.values[j][0])
        out["converged"][i] = bool(eig.converged[j])
        out["trace"][i] = _num(tr.value[j])
        lo, hi = tr.ci[j]
        out["trace_ci"][i] = [_num(lo), _num(hi)] if _num(lo) is not None and _num(hi) is not None else None
        out["keskar"][i] = _num(sharp.value[j])
    return out


def _num(v):
    return float(v) if v is not None and math.isfinite(float(v)) else None


def member_fields(curv: dict | None, i: int, prefix: str = "") -> dict:
    """Member i's measures as row fields: top_eigenvalue, trace, trace_ci, keskar (with a prefix
    such as "a_"); None everywhere if nothing was measured (an older run)."""
    curv = curv or {}
    return {f"{prefix}{k}": (curv.get(k) or [None] * (i + 1))[i] for k in ("top_eigenvalue", "trace", "trace_ci", "keskar")}


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
