"""Input sensitivity (Novak et al. 2018): how much a classifier's class probabilities move when
its input image moves.

    sensitivity(x) = || d p(x) / d x ||_F      p = class probabilities, x = the whole image

computed exactly, one backward pass per class. The per-class passes run on a whole batch at
once: the zoo's models treat samples independently (no batch norm), so the gradient of
sum_b p[b, k] with respect to the batch is, row by row, each sample's own gradient of p[b, k].

The original study measured a parameter-gradient norm on one mini-batch instead; this is the
input-Jacobian definition of the paper that named the measure.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def probabilities_fn(model: Callable, outputs_probabilities: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> class probabilities: the model's output where it already is (cnn-1's Softmax),
    softmax of the logits otherwise."""
    if outputs_probabilities:
        return model
    return lambda x: torch.softmax(model(x), dim=-1)


def jacobian_norms(model: Callable, x: torch.Tensor, outputs_probabilities: bool, batch_size: int = 256) -> torch.Tensor:
    """Frobenius norm of d p(x_i) / d x_i for every sample: [n], in x's dtype and device.

    `model` is any callable from a batch [B, ...] to outputs [B, K]: an nn.Module, or an
    Ensemble member (`ens.member(i)`). A model with non-finite weights gives NaN norms."""
    _check_independent(model)
    probs = probabilities_fn(model, outputs_probabilities)
    norms = []
    for s in range(0, len(x), batch_size):
        xb = x[s : s + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            p = probs(xb)  # [B, K]
            sq = torch.zeros(len(xb), dtype=torch.float64, device=x.device)
            for k in range(p.shape[1]):
                (g,) = torch.autograd.grad(p[:, k].sum(), xb, retain_graph=k < p.shape[1] - 1)
                sq += g.flatten(1).double().pow(2).sum(1)
        norms.append(sq.sqrt().to(x.dtype))
    return torch.cat(norms)


def sensitivity(model: Callable, x: torch.Tensor, outputs_probabilities: bool, batch_size: int = 256) -> float:
    """The mean over the samples x of the Jacobian's Frobenius norm."""
    return jacobian_norms(model, x, outputs_probabilities, batch_size).mean().item()


def ensemble_sensitivity(ens, x: torch.Tensor, outputs_probabilities: bool, batch_size: int = 256) -> torch.Tensor:
    """sensitivity() of every member of an engine.Ensemble: [N]."""
    return torch.tensor([sensitivity(ens.member(i), x, outputs_probabilities, batch_size) for i in range(ens.n)])


def _check_independent(model) -> None:
    """Batch norm in training mode mixes the samples of a batch, which the batched passes assume it does not."""
    if isinstance(model, nn.Module) and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()
    ):
        raise ValueError("a batch-norm layer in training mode mixes samples; call model.eval() first")


def input_sensitivity(model: nn.Module, data, outputs_probabilities: bool = False, mode: str = "eval") -> float:
    """sensitivity's mean input-Jacobian norm over all the inputs of `data` (an (x, y) pair or
    batches, as in `dlscope.analysis`), on a copy of the model in `mode` ("train" is refused for
    batch norm, which mixes the samples)."""
    import copy

    from .objective import as_batches

    m = copy.deepcopy(model).train(mode == "train")
    x = torch.cat([xb for xb, _ in as_batches(data)])
    return sensitivity(m, x, outputs_probabilities)
