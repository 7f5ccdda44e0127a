"""The 1-D regression tasks of func-fit, grad-norm and min-ratio: the two target functions, the
training inputs, and when a training of them stalled on the constant-prediction plateau or fit.
Not an experiment: the experiments that train on these share them from here."""

from __future__ import annotations

import math

import torch


def f1(x: torch.Tensor) -> torch.Tensor:
    """sin(5 pi x) / (5 pi x), with f1(0) = 1."""
    z = 5 * math.pi * x
    return torch.where(z == 0, torch.ones_like(z), torch.sin(z) / torch.where(z == 0, torch.ones_like(z), z))


def f2(x: torch.Tensor) -> torch.Tensor:
    """sign(sin(5 pi x))."""
    return torch.sign(torch.sin(5 * math.pi * x))


FUNCTIONS = {"f1": f1, "f2": f2}


def inputs(points: int, device="cpu") -> torch.Tensor:
    return torch.linspace(-1, 1, points, device=device).unsqueeze(1)


STALL_TOL = 0.01  # stalled: final MSE within 1% of the constant-prediction MSE
FIT_FRACTION = 0.1  # fits: final MSE <= FIT_FRACTION x the constant-prediction MSE (R^2 >= 0.9)


def constant_mse(function: str, points: int) -> float:
    """The MSE of the best constant prediction (the targets' mean) on the training points: the
    targets' variance, in float64."""
    y = FUNCTIONS[function](inputs(points).double()[:, 0])
    return float((y - y.mean()).square().mean())


def is_stalled(final_loss, const_mse: float) -> bool:
    """Whether a training ended on the constant-prediction plateau (a diverged one did not)."""
    return final_loss is not None and math.isfinite(final_loss) and abs(final_loss - const_mse) <= STALL_TOL * const_mse


def is_fit(final_loss, const_mse: float) -> bool:
    return final_loss is not None and math.isfinite(final_loss) and final_loss <= FIT_FRACTION * const_mse
