"""First-order measures with the conventions of `dlscope.analysis` (see analysis.objective): the
full-data mean loss and the norm of its gradient, of one model or of every member of an ensemble.

    grad_norm(model, (x, y), loss="mse")     # ‖∇L‖ (one value per member for an ensemble)
    mean_loss_of(model, (x, y), loss="ce")   # L
    ensemble_gradient(ens, x, y, loss="ce")  # {"loss", "grad_norm"[, "acc"]} of an engine.Ensemble, one pass
"""

from __future__ import annotations

import torch

from ..losses import loss_per_member
from .objective import LossArg, Objective, unbatch


def grad_norm(model, data, loss: LossArg = "ce", mode: str = "eval", batch_size: int | None = None):
    """‖∇L‖ of the full-data mean loss (one value per member for an ensemble)."""
    obj = Objective(model, data, loss, mode, batch_size)
    return unbatch(obj.grad().double().norm(dim=1).tolist(), obj)


def mean_loss_of(model, data, loss: LossArg = "ce", mode: str = "eval", batch_size: int | None = None):
    """The full-data mean loss, as every measure here sees it."""
    obj = Objective(model, data, loss, mode, batch_size)
    return unbatch(obj.loss().double().tolist(), obj)


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
