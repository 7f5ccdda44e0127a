"""The loss on a 2-D plane through the model (Li et al. 2018):

    plane = loss_plane(model, data, loss="ce", steps=21, span=1.0, seed=0)
    plane.loss[i, j] = L(θ + alphas[i]·d1 + betas[j]·d2);  plane.loss[c, c] = L(θ), c = steps // 2

Directions: by default two seeded Gaussian directions, filter-normalised (each filter, i.e. each
row along a weight's first dimension, scaled to the norm of the same filter of θ; biases and other
1-D parameters, batch-norm's included, get no component, as in Li et al.). They may be given
instead: flat tensors [P] (or [N, P] for an ensemble), or models of the same architecture, used
as `other − model` (a plane through three trained models), or the top Hessian eigenvectors
(`top_eigenvalues(..., return_vectors=True).vectors`). Given directions are used as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .objective import LossArg, Objective


@dataclass
class Plane:
    alphas: list[float]
    betas: list[float]
    loss: torch.Tensor  # [steps, steps], or [N, steps, steps] for an ensemble
    directions: tuple[torch.Tensor, torch.Tensor]
    info: dict = field(default_factory=dict)

    @property
    def center_loss(self):
        c = len(self.alphas) // 2
        return self.loss[..., c, c]

    def to_dict(self) -> dict:
        return {"alphas": self.alphas, "betas": self.betas, "loss": self.loss.tolist(), **self.info}

    def plot(self, ax=None, member: int = 0, title: str | None = None):
        return plot_plane(self, ax, member, title)


def filter_normalized(direction: torch.Tensor, obj: Objective) -> torch.Tensor:
    """[N, P] direction rescaled filter by filter to the norms of theta0's filters."""
    out = []
    for n in range(obj.n):
        d, t = obj.unflatten(direction[n]), obj.unflatten(obj.theta0[n])
        parts = {}
        for k in obj.names:
            if d[k].dim() <= 1:
                parts[k] = torch.zeros_like(d[k])
            else:
                dn = d[k].flatten(1).norm(dim=1).clamp_min(1e-30)
                tn = t[k].flatten(1).norm(dim=1)
                parts[k] = d[k] * (tn / dn).view(-1, *[1] * (d[k].dim() - 1))
        out.append(obj.flatten(parts)[0])
    return torch.stack(out)


def _as_direction(d, obj: Objective) -> torch.Tensor:
    if isinstance(d, nn.Module):
        other = {k: p.detach() for k, p in d.named_parameters() if k in obj.names}
        return obj.flatten(other).to(obj.theta0) - obj.theta0
    d = torch.as_tensor(d).to(obj.theta0)
    return d.expand(obj.n, -1) if d.dim() == 1 else d


def loss_plane(
    model,
    data,
    loss: LossArg = "ce",
    steps: int = 21,
    span: float = 1.0,
    directions=None,
    seed: int = 0,
    mode: str = "eval",
    batch_size: int | None = None,
) -> Plane:
    """The mean loss on a steps × steps grid of [-span, span]² in the plane (see module docstring).
    steps must be odd, so that the model itself is the centre point."""
    if steps % 2 != 1:
        raise ValueError(f"steps must be odd (the model is the centre point), not {steps}")
    obj = Objective(model, data, loss, mode, batch_size)
    obj.check_deterministic()
    if directions is None:
        g = torch.Generator().manual_seed(seed)
        d1, d2 = (
            filter_normalized(torch.randn(obj.theta0.shape, generator=g, dtype=torch.float64).to(obj.theta0), obj)
            for _ in range(2)
        )
    else:
        d1, d2 = (_as_direction(d, obj) for d in directions)
    # One grid point at a time: 7 or 21 points as one vmapped ensemble took 0.42 s CPU per point
    # against 0.22-0.32 s one by one (cnn-1, 1,000 images, a loaded CPU, both unchunked); what
    # makes the 21 x 21 plane fast is obj.loss's chunks and channels-last layout (3x per point).
    coords = torch.linspace(-span, span, steps, dtype=torch.float64)
    coords[steps // 2] = 0.0  # exactly: the centre is the model itself
    grid = torch.empty(obj.n, steps, steps, dtype=torch.float64)
    for i, a in enumerate(coords.tolist()):
        for j, b in enumerate(coords.tolist()):
            grid[:, i, j] = obj.loss(obj.theta0 + a * d1 + b * d2).double().cpu()
    single = not obj.ensemble
    info = {
        "steps": steps,
        "span": span,
        "seed": seed,
        "directions": "given" if directions is not None else "random, filter-normalised",
        **obj.describe(),
    }
    return Plane(coords.tolist(), coords.tolist(), grid[0] if single else grid, (d1[0], d2[0]) if single else (d1, d2), info)


def plot_plane(plane: Plane, ax=None, member: int = 0, title: str | None = None):
    """Filled contours of the loss with the model marked at the centre. Returns the axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.2))
    z = plane.loss if plane.loss.dim() == 2 else plane.loss[member]
    z = z.numpy()
    finite = np.isfinite(z)
    z = np.where(finite, z, np.nanmax(np.where(finite, z, np.nan)) if finite.any() else 0.0)  # NaN cells drawn at the top level
    a, b = np.meshgrid(plane.alphas, plane.betas, indexing="ij")
    levels = np.quantile(z, np.linspace(0, 1, 16))
    levels = np.unique(levels) if len(np.unique(levels)) > 1 else 16
    cs = ax.contourf(a, b, z, levels=levels, cmap="viridis")
    ax.contour(a, b, z, levels=cs.levels, colors="k", linewidths=0.3)
    ax.plot(
        [0],
        [0],
        "r*",
        ms=10,
        label=f"model (loss {float(plane.center_loss if plane.loss.dim() == 2 else plane.center_loss[member]):.4g})",
    )
    ax.figure.colorbar(cs, ax=ax, label="mean loss")
    ax.set_xlabel("α (direction 1)")
    ax.set_ylabel("β (direction 2)")
    ax.set_title(title or f"loss plane ({plane.info.get('directions', '')})", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    return ax
