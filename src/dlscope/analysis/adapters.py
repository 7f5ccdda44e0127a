"""The older measures with the same model, data, loss and mode conventions as the rest of
`dlscope.analysis` (see analysis.objective): thin adapters over analysis.hessian,
analysis.interpolation, analysis.sensitivity and analysis.pca, which keep their own interfaces."""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import interpolation as _interp
from . import pca as _pca
from . import sensitivity as _sens
from .objective import LossArg, Objective, as_batches, unbatch


def grad_norm(model, data, loss: LossArg = "ce", mode: str = "eval", batch_size: int | None = None):
    """‖∇L‖ of the full-data mean loss (one value per member for an ensemble)."""
    obj = Objective(model, data, loss, mode, batch_size)
    return unbatch(obj.grad().double().norm(dim=1).tolist(), obj)


def mean_loss_of(model, data, loss: LossArg = "ce", mode: str = "eval", batch_size: int | None = None):
    """The full-data mean loss, as every measure here sees it."""
    obj = Objective(model, data, loss, mode, batch_size)
    return unbatch(obj.loss().double().tolist(), obj)


def interpolation_path(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    alphas: list[float],
    loss: LossArg = "ce",
    mode: str = "eval",
    batch_size: int | None = None,
) -> dict[str, list[float]]:
    """{"alpha", "loss"}: the mean loss at (1 − α)·a + α·b (parameters and float buffers, as
    analysis.interpolation mixes them) for every α."""
    losses = [mean_loss_of(_interp.interpolate(model_a, model_b, a), data, loss, mode, batch_size) for a in alphas]
    return {"alpha": [float(a) for a in alphas], "loss": losses}


def input_sensitivity(model: nn.Module, data, outputs_probabilities: bool = False, mode: str = "eval") -> float:
    """analysis.sensitivity's mean input-Jacobian norm over all the inputs of `data`, on a copy of
    the model in `mode` ("train" is refused for batch norm, which mixes the samples)."""
    m = copy.deepcopy(model).train(mode == "train")
    x = torch.cat([xb for xb, _ in as_batches(data)])
    return _sens.sensitivity(m, x, outputs_probabilities)


def trajectory_pca(models: list, k: int = 2, layer: str | None = None) -> _pca.PCA:
    """analysis.pca.fit_pca on the parameter vectors of a list of models (or snapshots)."""
    points = [m if isinstance(m, torch.Tensor) else _pca.snapshot(m, layer) for m in models]
    return _pca.fit_pca(torch.stack(points), k)
