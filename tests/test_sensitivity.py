"""Input sensitivity: the exact Jacobian norm against finite differences and a closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlscope import models
from dlscope.analysis.sensitivity import ensemble_sensitivity, jacobian_norms, sensitivity
from dlscope.engine import Ensemble


def finite_difference_norms(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """||d f(x_i) / d x_i||_F per sample by central differences, every input coordinate of a
    sample perturbed in its own row of one batch."""
    norms = []
    for xi in x:
        d = eps * torch.eye(xi.numel(), dtype=x.dtype).view(-1, *xi.shape)  # one perturbation per row
        jac_t = (f(xi + d) - f(xi - d)) / (2 * eps)  # [inputs, outputs]
        norms.append(jac_t.pow(2).sum().sqrt())
    return torch.stack(norms)


def small_cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 4)).double()


def test_matches_finite_differences_with_softmax_applied():
    model = small_cnn()
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    exact = jacobian_norms(model, x, outputs_probabilities=False)
    fd = finite_difference_norms(lambda z: torch.softmax(model(z), -1), x)
    assert exact.shape == (5,)
    assert (exact > 0).all()
    torch.testing.assert_close(exact.double(), fd, rtol=1e-5, atol=1e-7)


def test_model_that_outputs_probabilities_is_not_softmaxed_twice():
    model = nn.Sequential(small_cnn(), nn.Softmax(dim=1))
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    exact = jacobian_norms(model, x, outputs_probabilities=True)
    fd = finite_difference_norms(model, x)
    torch.testing.assert_close(exact.double(), fd, rtol=1e-5, atol=1e-7)
    # softmax of the probabilities would be a different (much flatter) function
    twice = jacobian_norms(model, x, outputs_probabilities=False)
    assert (twice < 0.9 * exact).all()


def test_linear_softmax_closed_form():
    """p = softmax(Wx + b)  =>  dp/dx = (diag(p) - p p^T) W."""
    torch.manual_seed(0)
    lin = nn.Linear(7, 5).double()
    x = torch.randn(6, 7, dtype=torch.float64)
    p = torch.softmax(lin(x), -1)
    jac = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) @ lin.weight  # [6, 5, 7]
    expected = jac.flatten(1).norm(dim=1)
    torch.testing.assert_close(jacobian_norms(lin, x, False, batch_size=4).double(), expected, rtol=1e-10, atol=1e-12)
    assert sensitivity(lin, x, False) == pytest.approx(expected.mean().item(), rel=1e-6)


def test_batching_does_not_mix_samples():
    torch.manual_seed(1)
    model = models.build("cnn-1")
    x = torch.randn(7, 3, 32, 32)
    whole = jacobian_norms(model, x, models.outputs_probabilities("cnn-1"), batch_size=256)
    one_by_one = torch.cat([jacobian_norms(model, x[i : i + 1], True) for i in range(7)])
    torch.testing.assert_close(whole, one_by_one, rtol=1e-5, atol=0)


def test_cnn1_probabilities_flag_equals_softmax_of_its_logits():
    """cnn-1 ends in Softmax: with the flag its own output is differentiated; the same network
    without that last layer, softmaxed by the analysis, must give the same numbers."""
    torch.manual_seed(2)
    model = models.build("cnn-1")
    logits = nn.Sequential(*list(model)[:-1])
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(jacobian_norms(model, x, True), jacobian_norms(logits, x, False), rtol=1e-5, atol=1e-8)


def test_ensemble_members_equal_their_standalone_models():
    seeds = [4, 5]
    ens = Ensemble.from_seeds("cnn-2", seeds, "cpu")
    x = torch.randn(6, 3, 32, 32)
    got = ensemble_sensitivity(ens, x, models.outputs_probabilities("cnn-2"))
    for i, s in enumerate(seeds):
        torch.manual_seed(s)
        assert got[i].item() == pytest.approx(sensitivity(models.build("cnn-2"), x, False), rel=1e-6)
    assert got[0] != got[1]


def test_non_finite_weights_give_nan_not_an_error():
    lin = nn.Linear(3, 4)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    assert torch.isnan(jacobian_norms(lin, torch.randn(2, 3), False)).all()
