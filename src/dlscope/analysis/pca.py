"""Optimization paths in parameter space: snapshots and a joint PCA (Li et al. 2018).

    path = [snapshot(model)]                        # at initialisation, then after every epoch
    pca = fit_pca(torch.stack(points_of_all_runs))  # [M, P] -> 2 directions
    pca.explained_variance_ratio; pca.transform(new_points)

A snapshot is the whole model's parameter vector, or one layer's (by parameter name such as
"0.weight", or module name such as "0" for its weight and bias). The PCA is centred, not scaled,
so directions are in the parameters' own units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def select_names(names: list[str], layer: str | None) -> list[str]:
    """The parameter names that make up `layer`: itself if it is a parameter name, else those in
    the module of that name. None selects every parameter."""
    if layer is None:
        return list(names)
    chosen = [k for k in names if k == layer or k.startswith(layer + ".")]
    if not chosen:
        raise KeyError(f"no parameter named {layer!r} (or inside a module of that name); have: {', '.join(names)}")
    return chosen


def snapshot(model, layer: str | None = None) -> torch.Tensor:
    """A detached copy of the parameters as one vector: [P] for an nn.Module, [N, P] for an
    engine.Ensemble (one row per member). In module order."""
    if isinstance(model, nn.Module):
        named = dict(model.named_parameters())
        return torch.cat([named[k].detach().reshape(-1) for k in select_names(list(named), layer)]).clone()
    return model.flat(select_names(list(model.params), layer)).clone()  # an Ensemble


@dataclass
class PCA:
    mean: torch.Tensor  # [P]
    components: torch.Tensor  # [k, P], orthonormal rows
    explained_variance: torch.Tensor  # [k], sample variance along each component
    explained_variance_ratio: torch.Tensor  # [k], fraction of the total variance

    def transform(self, points: torch.Tensor) -> torch.Tensor:
        """Coordinates of points [..., P] in the fitted directions: [..., k]."""
        return (points.to(self.mean.dtype) - self.mean) @ self.components.T


def fit_pca(points: torch.Tensor, k: int = 2) -> PCA:
    """PCA of the rows of `points` [M, P] (centred, not scaled), in float64.

    Each component's sign is fixed so its largest-magnitude entry is positive (deterministic
    figures; SVD signs are arbitrary)."""
    x = points.detach().to(torch.float64).reshape(len(points), -1)
    if not torch.isfinite(x).all():  # an SVD of NaN fails deep inside LAPACK: say what is wrong here
        raise ValueError("fit_pca: non-finite points (a diverged run?); fit on the finite runs only")
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    k = min(k, len(s))
    comps = vh[:k]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * signs
    var = s.pow(2)
    return PCA(
        mean=mean,
        components=comps,
        explained_variance=var[:k] / max(len(x) - 1, 1),
        explained_variance_ratio=var[:k] / var.sum().clamp_min(torch.finfo(torch.float64).tiny),
    )


def trajectory_pca(models: list, k: int = 2, layer: str | None = None) -> PCA:
    """fit_pca on the parameter vectors of a list of models (or snapshots)."""
    points = [m if isinstance(m, torch.Tensor) else snapshot(m, layer) for m in models]
    return fit_pca(torch.stack(points), k)
