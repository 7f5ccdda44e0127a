"""1-D linear interpolation between two trained models (Goodfellow et al. 2015; Keskar et al. 2017).

    theta(alpha) = (1 - alpha) * theta_a + alpha * theta_b

over every parameter and floating-point buffer, for any alpha (alpha < 0 and alpha > 1
extrapolate). Written as that formula, not as a + alpha * (b - a), so that alpha = 0 and
alpha = 1 give theta_a and theta_b bit for bit, and the end points' metrics equal the models'.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .sensitivity import sensitivity


def check_same_architecture(model_a: nn.Module, model_b: nn.Module) -> None:
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if list(sa) != list(sb):
        raise ValueError("the two models have different parameter names: not one architecture")
    for k in sa:
        if sa[k].shape != sb[k].shape:
            raise ValueError(f"{k}: shape {tuple(sa[k].shape)} vs {tuple(sb[k].shape)}: not one architecture")


def interpolate_state(state_a: dict, state_b: dict, alpha: float) -> dict:
    """theta(alpha) for two state dicts. Integer buffers (counters) cannot be mixed: they are
    taken from the nearer end. At alpha 0 and 1 the end itself is returned, so that a diverged
    (non-finite) other end cannot leak in through 0 * inf = NaN."""
    if alpha in (0, 1):
        return {k: v.detach().clone() for k, v in (state_a if alpha == 0 else state_b).items()}
    out = {}
    for k, a in state_a.items():
        b = state_b[k]
        if a.is_floating_point():
            out[k] = (1 - alpha) * a.detach() + alpha * b.detach()
        else:
            out[k] = (a if alpha < 0.5 else b).clone()
    return out


def interpolate(model_a: nn.Module, model_b: nn.Module, alpha: float) -> nn.Module:
    """A new model (a copy of model_a's architecture) with weights theta(alpha)."""
    check_same_architecture(model_a, model_b)
    model = copy.deepcopy(model_a)
    model.load_state_dict(interpolate_state(model_a.state_dict(), model_b.state_dict(), alpha))
    return model


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy on the model's output (as in training; for cnn-1 that output is its
    Softmax) and accuracy as a fraction, over all of x."""
    loss, correct = 0.0, 0
    for s in range(0, len(x), batch_size):
        out = model(x[s : s + batch_size])
        yb = y[s : s + batch_size]
        loss += F.cross_entropy(out, yb, reduction="sum").double().item()
        correct += (out.argmax(1) == yb).sum().item()
    return loss / len(x), correct / len(x)


def evaluate(model: nn.Module, splits: dict, outputs_probabilities: bool, sensitivity_x: torch.Tensor | None) -> dict[str, float]:
    """{split}_loss and {split}_acc for every (x, y) in splits ({"train": ..., "test": ...}), and
    the mean input sensitivity over sensitivity_x (if given)."""
    out = {}
    for name, (x, y) in splits.items():
        out[f"{name}_loss"], out[f"{name}_acc"] = loss_and_accuracy(model, x, y)
    if sensitivity_x is not None:
        out["sensitivity"] = sensitivity(model, sensitivity_x, outputs_probabilities)
    return out


def evaluate_path(
    model_a: nn.Module,
    model_b: nn.Module,
    alphas: list[float],
    splits: dict,
    outputs_probabilities: bool,
    sensitivity_x: torch.Tensor | None = None,
) -> dict[str, list[float]]:
    """evaluate() at theta(alpha) for every alpha: {"alpha": [...], "train_loss": [...], ...}."""
    check_same_architecture(model_a, model_b)
    rows = [evaluate(interpolate(model_a, model_b, a), splits, outputs_probabilities, sensitivity_x) for a in alphas]
    return {"alpha": [float(a) for a in alphas], **{k: [r[k] for r in rows] for k in rows[0]}}


def alpha_grid(lo: float, hi: float, points: int) -> list[float]:
    """points evenly spaced values in [lo, hi]; 0 and 1 exactly when they lie on the grid."""
    grid = torch.linspace(lo, hi, points, dtype=torch.float64).tolist()
    return [round(a, 12) + 0.0 for a in grid]  # + 0.0 turns a rounded -0.0 into 0.0


def interpolation_path(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    alphas: list[float],
    loss="ce",
    mode: str = "eval",
    batch_size: int | None = None,
) -> dict[str, list[float]]:
    """{"alpha", "loss"}: the mean loss at (1 − α)·a + α·b (parameters and float buffers, as
    interpolate mixes them) for every α, with the conventions of `dlscope.analysis`."""
    from .gradient import mean_loss_of

    losses = [mean_loss_of(interpolate(model_a, model_b, a), data, loss, mode, batch_size) for a in alphas]
    return {"alpha": [float(a) for a in alphas], "loss": losses}
