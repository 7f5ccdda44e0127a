"""The two losses of the study, in one place for the trainer (engine/) and the measures (analysis/),
so that what is trained and what is measured are the same formula."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossArg = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_loss(out: torch.Tensor, y: torch.Tensor, loss: LossArg) -> torch.Tensor:
    """Mean loss of one batch: "mse" (output reshaped to y's shape), "ce" (cross-entropy on the
    model's output, as the trainer uses it), or a callable."""
    if callable(loss):
        return loss(out, y)
    if loss == "mse":
        return (out.reshape(y.shape) - y).pow(2).mean()
    if loss == "ce":
        return F.cross_entropy(out, y)
    raise ValueError(f"unknown loss {loss!r}; use 'mse', 'ce' or a callable")


def loss_per_member(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """out [N, B, ...], y [N, B] -> mean loss per member [N] of an ensemble."""
    n, b = y.shape[:2]
    if kind == "mse":
        return (out.reshape(n, b) - y).pow(2).mean(1)
    if kind == "ce":
        return F.cross_entropy(out.reshape(n * b, -1), y.reshape(-1), reduction="none").view(n, b).mean(1)
    raise ValueError(f"unknown loss {kind!r}")
