"""Curvature of a loss surface: gradient norm, exact Hessian, Hessian-vector products, eigenvalues.

Everything works on a plain nn.Module and its data, seen as a function of one flat parameter
vector θ (PyHessian style):

    obj = Objective(model, x, y, loss="mse")      # or "ce", or fn(output, y) -> mean loss
    H = hessian(obj)                              # [P, P], exact (torch.func), small models
    eigs = eigenvalues(H); min_ratio(eigs)        # fraction of eigenvalues > 0
    top_eigenvalues(obj, k=3)                     # Lanczos on Hessian-vector products, large models
    grad_norm(model, x, y)                        # full-batch ||∇L||

Losses are means over the whole data; `batch_size` only splits the work into chunks (memory),
the results are those of the full batch. The model's own weights are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from ..losses import LossArg, loss_per_member, mean_loss  # noqa: F401 (names others import from here)


@dataclass
class Objective:
    """The mean loss of `model` on (x, y) as a function of one flat parameter vector θ.

    theta0 is the model's current parameters (a detached copy); every function below takes an
    optional theta and uses theta0 when none is given."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss: LossArg = "mse"
    batch_size: int | None = None  # split the data into chunks of this size (memory only)
    names: list[str] = field(init=False)
    shapes: list[torch.Size] = field(init=False)
    theta0: torch.Tensor = field(init=False)

    def __post_init__(self):
        named = [(k, p) for k, p in self.model.named_parameters() if p.requires_grad]
        self.names = [k for k, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.theta0 = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()

    @property
    def dim(self) -> int:
        return self.theta0.numel()

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = torch.split(theta, [s.numel() for s in self.shapes])
        return {k: v.view(s) for k, v, s in zip(self.names, pieces, self.shapes)}

    def on(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss on one chunk at parameters theta."""
        return mean_loss(functional_call(self.model, self.unflatten(theta), (x,)), y, self.loss)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """Full-data mean loss at theta, in one pass (what torch.func transforms differentiate)."""
        return self.on(theta, self.x, self.y)

    def chunks(self):
        """(x, y, weight) pieces whose weighted sum of mean losses is the full-data mean loss."""
        n = len(self.x)
        size = self.batch_size or n
        for s in range(0, n, size):
            xb, yb = self.x[s : s + size], self.y[s : s + size]
            yield xb, yb, len(xb) / n

    def _sum_over_chunks(self, fn: Callable) -> torch.Tensor:
        total = None
        for xb, yb, w in self.chunks():
            part = fn(xb, yb) * w
            total = part if total is None else total + part
        return total


# --------------------------------------------------------------------------- first order


def loss_value(obj: Objective, theta: torch.Tensor | None = None) -> float:
    theta = obj.theta0 if theta is None else theta
    with torch.no_grad():
        return float(obj._sum_over_chunks(lambda xb, yb: obj.on(theta, xb, yb)))


def gradient(obj: Objective, theta: torch.Tensor | None = None) -> torch.Tensor:
    """∇L(θ), flat [P]."""
    theta = obj.theta0 if theta is None else theta
    return obj._sum_over_chunks(lambda xb, yb: grad(obj.on)(theta, xb, yb))


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossArg = "mse", batch_size: int | None = None) -> float:
    """Full-batch gradient norm: the L2 norm of ∇L over all parameters, L the mean loss on (x, y)."""
    return float(gradient(Objective(model, x, y, loss, batch_size)).norm())


# --------------------------------------------------------------------------- second order


def hessian(obj: Objective, theta: torch.Tensor | None = None) -> torch.Tensor:
    """The exact Hessian ∇²L(θ) [P, P] (forward-over-reverse with torch.func). Memory grows as
    P × chunk size × the model's activations: use it for models up to a few thousand parameters."""
    theta = obj.theta0 if theta is None else theta
    H = obj._sum_over_chunks(lambda xb, yb: torch.func.hessian(obj.on)(theta, xb, yb))
    return (H + H.T) / 2  # exact symmetry for eigvalsh (they differ only by rounding)


def hvp(obj: Objective, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
    """Hessian-vector product H v (forward-over-reverse: one jvp of the gradient). v: [P], or
    [k, P] for k products at once."""
    theta = obj.theta0 if theta is None else theta

    def one(vec, xb, yb):
        return jvp(lambda t: grad(obj.on)(t, xb, yb), (theta,), (vec,))[1]

    if v.dim() == 2:
        return obj._sum_over_chunks(lambda xb, yb: vmap(one, in_dims=(0, None, None))(v, xb, yb))
    return obj._sum_over_chunks(lambda xb, yb: one(v, xb, yb))


def eigenvalues(H: torch.Tensor) -> torch.Tensor:
    """All eigenvalues of a symmetric matrix, ascending."""
    return torch.linalg.eigvalsh(H)


def min_ratio(eigs: torch.Tensor, rel_tol: float = 0.0) -> float:
    """Minimal ratio: the fraction of eigenvalues > 0 (1 at a strict local minimum).

    rel_tol > 0 counts eigenvalues with λ ≤ rel_tol · max|λ| as not positive: numerically zero
    eigenvalues (symmetries, dead units) then do not count as positive by rounding luck."""
    eigs = eigs.detach()
    threshold = rel_tol * eigs.abs().max() if rel_tol else 0.0
    return float((eigs > threshold).double().mean())


# --------------------------------------------------------------------------- large models: iterative


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    steps: int,
    v0: torch.Tensor | None = None,
    dtype=torch.float64,
    device="cpu",
    seed: int = 0,
) -> torch.Tensor:
    """Ritz values (ascending) of a symmetric operator after `steps` Lanczos steps with full
    re-orthogonalisation. The extreme ones converge first; steps = dim gives every eigenvalue."""
    steps = min(steps, dim)
    if v0 is None:
        v0 = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q = v0.to(device, dtype)
    q = q / q.norm()
    Q = torch.zeros(steps, dim, dtype=dtype, device=device)
    alphas, betas = [], []
    for j in range(steps):
        Q[j] = q
        w = matvec(q).to(dtype)
        alpha = torch.dot(w, q)
        alphas.append(alpha)
        basis = Q[: j + 1]
        for _ in range(2):  # twice is enough (Kahan): keeps the basis orthogonal to rounding
            w = w - basis.T @ (basis @ w)
        beta = w.norm()
        if j == steps - 1 or beta <= 1e-10 * max(1.0, float(alpha.abs())):
            break  # the Krylov space is exhausted: the Ritz values so far are exact
        betas.append(beta)
        q = w / beta
    a = torch.stack(alphas)
    T = torch.diag(a)
    if betas:
        b = torch.stack(betas[: len(alphas) - 1])
        T = T + torch.diag(b, 1) + torch.diag(b, -1)
    return torch.linalg.eigvalsh(T)


def power_iteration(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    iters: int = 100,
    tol: float = 1e-6,
    dtype=torch.float64,
    device="cpu",
    seed: int = 0,
) -> tuple[float, torch.Tensor]:
    """The eigenvalue of largest magnitude and its unit eigenvector, by power iteration."""
    v = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device, dtype)
    v = v / v.norm()
    lam = 0.0
    for _ in range(iters):
        w = matvec(v).to(dtype)
        new = float(torch.dot(w, v))
        v = w / w.norm()
        if abs(new - lam) <= tol * max(abs(new), 1e-30):
            lam = new
            break
        lam = new
    return lam, v


def top_eigenvalues(
    obj: Objective,
    k: int = 1,
    steps: int | None = None,
    method: str = "lanczos",
    theta: torch.Tensor | None = None,
    seed: int = 0,
) -> list[float]:
    """The k largest Hessian eigenvalues from Hessian-vector products (never forms H).

    method "lanczos" (default; any k) or "power" (k = 1: the eigenvalue of largest |λ|)."""
    theta = obj.theta0 if theta is None else theta

    def matvec(v):
        return hvp(obj, v.to(theta.dtype), theta)

    if method == "power":
        if k != 1:
            raise ValueError("power iteration gives one eigenvalue; use method='lanczos' for k > 1")
        return [power_iteration(matvec, obj.dim, iters=steps or 100, device=theta.device, seed=seed)[0]]
    if method != "lanczos":
        raise ValueError(f"unknown method {method!r}; use 'lanczos' or 'power'")
    ritz = lanczos(matvec, obj.dim, steps or max(2 * k + 20, 30), device=theta.device, seed=seed)
    return ritz.flip(0)[:k].tolist()


# --------------------------------------------------------------------------- ensembles


def ensemble_gradient(ens, x: torch.Tensor, y: torch.Tensor, loss: str = "ce", batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Full-batch mean loss and gradient norm of every member of an ensemble (duck-typed like
    engine.Ensemble: .n, .parameters(), .forward_shared), in one pass
    over (x, y) (y [n] shared, or [N, n] per member). Returns {"loss", "grad_norm"} ([N] each),
    plus "acc" for loss "ce". The gradient is that of the data loss alone (no weight decay)."""
    n = len(x)
    y = y.expand(ens.n, n) if y.dim() == 1 else y
    params = ens.parameters()
    grads = [torch.zeros_like(p) for p in params]
    total = torch.zeros(ens.n, device=x.device, dtype=torch.float64)
    correct = torch.zeros(ens.n, device=x.device, dtype=torch.float64)
    for s in range(0, n, batch_size):
        xb, yb = x[s : s + batch_size], y[:, s : s + batch_size]
        with torch.enable_grad():
            out = ens.forward_shared(xb)
            part = loss_per_member(out, yb, loss) * (xb.shape[0] / n)  # weighted: sums to the full mean
            for g, gp in zip(grads, torch.autograd.grad(part.sum(), params)):
                g += gp
        total += part.detach().double()
        if loss == "ce":
            correct += (out.detach().argmax(-1) == yb).sum(1).double()
    norm = torch.sqrt(sum(g.reshape(ens.n, -1).double().pow(2).sum(1) for g in grads))
    result = {"loss": total.float().cpu(), "grad_norm": norm.float().cpu()}
    if loss == "ce":
        result["acc"] = (correct / n).float().cpu()
    return result
