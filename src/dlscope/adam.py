"""Adam's update, written once: the ensemble trainer's BatchedAdam (engine/optim.py), the flat MLP
path (engine/fast_mlp.py) and the critical-point solvers (analysis/critical_points.py) all step
through `adam_update`.

Low in the tree on purpose (it imports torch alone), so that the engine and the analysis can
both use it.
"""

from __future__ import annotations

import torch


def adam_update(
    theta, grad, exp_avg, exp_avg_sq, step_size, bc2_sqrt, weight_decay: float, betas, eps: float, fused_add: bool = False
):
    """torch.optim.Adam's update (coupled L2: the decay is added to the gradient before the
    moments), out of place; step_size = lr / (1 - beta1^t), per member [N, 1, ...] or a number,
    bc2_sqrt = sqrt(1 - beta2^t). Returns the new (theta, exp_avg, exp_avg_sq).

    fused_add: add the decay term (wd * theta) and the second moment's new term ((1 - beta2) g g)
    with one rounding each, as ATen's add(alpha=) and addcmul kernels do (BatchedAdam's steps);
    False: multiply, then add, as written out by hand on the flat path, whose compiled loop fuses
    these with their neighbours. The two differ in the last bit only; each path keeps its own, so
    that its results stay bit for bit what they were."""
    b1, b2 = betas
    if weight_decay:
        grad = grad.add(theta, alpha=weight_decay) if fused_add else grad + weight_decay * theta
    exp_avg = exp_avg.lerp(grad, 1 - b1)
    if fused_add:
        exp_avg_sq = torch.addcmul(exp_avg_sq * b2, grad, grad, value=1 - b2)
    else:
        exp_avg_sq = exp_avg_sq * b2 + (1 - b2) * grad * grad
    denom = exp_avg_sq.sqrt() / bc2_sqrt + eps
    return theta - step_size * (exp_avg / denom), exp_avg, exp_avg_sq
