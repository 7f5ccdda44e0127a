"""Sharpness: how much the loss can rise when the weights move a little.

    sharpness(model, data, loss="ce", kind="keskar")     -> Sharpness (.value, .loss, .max_loss)

kinds (θ the weights, L the mean loss, the perturbation δ = T·u with u in a set U):

  "keskar"    ε-sharpness (Keskar et al. 2017): U the box |u_i| ≤ 1, T = ε(|θ| + 1),
              value = 100·(max L(θ+δ) − L(θ)) / (1 + L(θ)); radius = ε (default 1e-3).
  "sam"       worst case in an L2 ball (Foret et al. 2021): T = 1, ‖u‖ ≤ ρ,
              value = max L(θ+δ) − L(θ); radius = ρ (default 0.05).
  "adaptive"  scale-invariant (Kwon et al. 2021, ASAM): T = |θ| + η elementwise, ‖u‖ ≤ ρ;
              value as "sam"; radius = ρ (default 0.5). With η = 0 (the default) a rescaling of
              the weights that leaves the function unchanged (ReLU layers ×c and ×1/c) leaves
              the value unchanged.
  "average"   random perturbations: δ ~ N(0, σ²I), value = E L(θ+δ) − L(θ) over n_samples
              draws, with a 95% interval; radius = σ (default 0.01).

The maximum is searched by projected ascent: each step moves u to the maximiser of the loss's
linearisation over U (ρ·g/‖g‖ in a ball, sign(g) in a box; the first step from u = 0 is SAM's
own step), and the best point seen is kept. Keskar et al. used L-BFGS-B; on a convex quadratic
both reach the same maximum. The value is therefore a lower bound on the true maximum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .curvature import mean_ci
from .objective import LossArg, Objective

KINDS = ("keskar", "sam", "adaptive", "average")
DEFAULT_RADIUS = {"keskar": 1e-3, "sam": 0.05, "adaptive": 0.5, "average": 0.01}


@dataclass
class Sharpness:
    kind: str
    value: float | list[float]
    loss: float | list[float]  # L(θ)
    max_loss: float | list[float]  # the highest loss found (the mean perturbed loss for "average")
    radius: float
    steps: int  # ascent steps, or random draws for "average"
    ci: tuple[float, float] | list[tuple[float, float]] | None = None  # "average" only
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "value": self.value,
            "loss": self.loss,
            "max_loss": self.max_loss,
            "radius": self.radius,
            "steps": self.steps,
            "ci": self.ci,
            **self.info,
        }


def sharpness(
    model,
    data,
    loss: LossArg = "ce",
    kind: str = "keskar",
    radius: float | None = None,
    steps: int = 20,
    seed: int = 0,
    mode: str = "eval",
    batch_size: int | None = None,
    eta: float = 0.0,
) -> Sharpness:
    """Sharpness of the given kind (see the module's docstring). steps: ascent steps (or random
    draws for "average")."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    radius = DEFAULT_RADIUS[kind] if radius is None else radius
    obj = Objective(model, data, loss, mode, batch_size)
    obj.check_deterministic()
    theta0 = obj.theta0
    base = obj.loss().double()
    info = {"seed": seed, **obj.describe()}
    if kind == "adaptive":
        info["eta"] = eta
    g = torch.Generator().manual_seed(seed)
    ci = None
    if kind == "average":
        rises = []
        for _ in range(steps):
            delta = radius * torch.randn(theta0.shape, generator=g, dtype=torch.float64).to(theta0)
            rises.append(obj.loss(theta0 + delta).double() - base)
        mean, low, high = mean_ci(torch.stack(rises, 1))
        value, best = mean, base + mean
        ci = [(float(a), float(b)) for a, b in zip(low.tolist(), high.tolist())]
    else:
        scale = {"keskar": radius * (theta0.abs() + 1), "sam": torch.ones_like(theta0), "adaptive": theta0.abs() + eta}[kind]
        box = kind == "keskar"
        best = _ascend(obj, theta0, scale, box, 1.0 if box else radius, steps, g)
        value = best - base
        if kind == "keskar":
            value = 100 * value / (1 + base)
    single = not obj.ensemble

    def out(t):
        vals = t.tolist() if isinstance(t, torch.Tensor) else t
        return vals[0] if single and isinstance(vals, list) else vals

    return Sharpness(kind, out(value), out(base), out(best), radius, steps, out(ci) if ci is not None else None, info)


def _ascend(obj: Objective, theta0, scale, box: bool, rho: float, steps: int, g: torch.Generator) -> torch.Tensor:
    """max over u in U of L(θ0 + scale·u), by iterated linear maximisation; [N] best losses."""
    u = torch.zeros_like(theta0)
    best = obj.loss(theta0).double()
    for _ in range(steps):
        loss, grad = obj.loss_and_grad(theta0 + scale * u)
        best = torch.maximum(best, loss.double())
        gu = grad * scale  # the gradient with respect to u
        dead = gu.norm(dim=1) == 0  # an exact stationary point: start from a random direction
        if dead.any():
            gu[dead] = torch.randn(gu[dead].shape, generator=g, dtype=torch.float64).to(gu)
        u = gu.sign() if box else rho * gu / gu.norm(dim=1, keepdim=True)
    return torch.maximum(best, obj.loss(theta0 + scale * u).double())
