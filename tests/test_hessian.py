"""Curvature tools checked against finite differences, closed forms and a second method."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlscope.analysis import hessian as hs
from dlscope.engine import Ensemble


def tanh_mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).to(dtype)


def regression_data(n=40, d=2, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.sin(x.sum(1)) + 0.1 * torch.randn(n, generator=g, dtype=dtype)
    return x, y


def fd_hessian(obj, theta, eps=1e-5):
    """Central differences of the autograd gradient, column by column."""
    cols = []
    for j in range(obj.dim):
        e = torch.zeros_like(theta)
        e[j] = eps
        cols.append((hs.gradient(obj, theta + e) - hs.gradient(obj, theta - e)) / (2 * eps))
    H = torch.stack(cols, 1)
    return (H + H.T) / 2


def test_exact_hessian_matches_finite_differences():
    x, y = regression_data()
    obj = hs.Objective(tanh_mlp(), x, y, "mse")
    H = hs.hessian(obj)
    H_fd = fd_hessian(obj, obj.theta0)
    assert H.shape == (21, 21)
    torch.testing.assert_close(H, H_fd, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(hs.eigenvalues(H), torch.linalg.eigvalsh(H_fd), atol=1e-7, rtol=1e-6)
    assert (hs.eigenvalues(H) < 0).any()  # a random point of a non-convex loss: not a minimum


def test_relu_zoo_model_hessian_matches_finite_differences():
    """mlp-minratio (ReLU, the min-ratio experiment's model): exact vs finite differences.
    Piecewise quadratic in the last layer, so differences are exact away from kinks."""
    from dlscope import models
    from dlscope.experiments.func_fit import f1, inputs

    torch.manual_seed(3)
    model = models.build("mlp-minratio").double()
    x = inputs(50).double()
    obj = hs.Objective(model, x, f1(x[:, 0]), "mse")
    H = hs.hessian(obj)
    torch.testing.assert_close(H, fd_hessian(obj, obj.theta0, eps=1e-6), atol=1e-6, rtol=1e-5)


def test_linear_least_squares_closed_form_and_minimum():
    """MSE of a linear model: H = 2/n AᵀA with A = [X, 1] (weight first, then bias); at the
    least-squares solution the gradient vanishes and every eigenvalue is positive."""
    x, y = regression_data(n=30, d=3)
    model = nn.Linear(3, 1).double()
    A = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    obj = hs.Objective(model, x, y, "mse")
    torch.testing.assert_close(hs.hessian(obj), 2 / len(x) * A.T @ A)

    sol = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    with torch.no_grad():
        model.weight.copy_(sol[:3][None])
        model.bias.copy_(sol[3:])
    assert hs.grad_norm(model, x, y) < 1e-12
    eigs = hs.eigenvalues(hs.hessian(hs.Objective(model, x, y)))
    assert hs.min_ratio(eigs) == 1.0
    assert hs.min_ratio(eigs, rel_tol=1e-9) == 1.0
    # the loss at the minimum is the least-squares residual
    assert hs.loss_value(hs.Objective(model, x, y)) == pytest.approx(float((A @ sol - y).pow(2).mean()), rel=1e-10)


class TwoScalars(nn.Module):
    """f(x) = a·b·x: the origin is a saddle of the MSE with eigenvalues ±2·mean(xy)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x):
        return self.a * self.b * x


def test_min_ratio_of_a_saddle_and_zero_eigenvalues():
    x = torch.linspace(0.5, 2, 10, dtype=torch.float64)
    y = 3 * x
    eigs = hs.eigenvalues(hs.hessian(hs.Objective(TwoScalars(), x, y)))
    c = 2 * (x * y).mean()
    torch.testing.assert_close(eigs, torch.stack([-c, c]))
    assert hs.min_ratio(eigs) == 0.5
    # rounding-level "positive" eigenvalues only count without the relative tolerance
    tiny = torch.tensor([-1.0, 1e-17, 2.0], dtype=torch.float64)
    assert hs.min_ratio(tiny) == pytest.approx(2 / 3)
    assert hs.min_ratio(tiny, rel_tol=1e-12) == pytest.approx(1 / 3)


def test_hvp_equals_hessian_times_vector_and_chunks_agree():
    x, y = regression_data(n=37)
    obj = hs.Objective(tanh_mlp(seed=2), x, y, "mse")
    H = hs.hessian(obj)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(obj.dim, generator=g, dtype=torch.float64)
    torch.testing.assert_close(hs.hvp(obj, v), H @ v)
    V = torch.randn(4, obj.dim, generator=g, dtype=torch.float64)
    torch.testing.assert_close(hs.hvp(obj, V), V @ H)
    # chunking the data (uneven last chunk) changes nothing but memory
    chunked = hs.Objective(obj.model, x, y, "mse", batch_size=10)
    torch.testing.assert_close(hs.hessian(chunked), H)
    torch.testing.assert_close(hs.hvp(chunked, v), H @ v)
    torch.testing.assert_close(hs.gradient(chunked), hs.gradient(obj))


def test_lanczos_and_power_iteration_match_eigvalsh():
    x, y = regression_data(n=50)
    obj = hs.Objective(tanh_mlp(seed=4), x, y, "mse")
    eigs = hs.eigenvalues(hs.hessian(obj))
    top = hs.top_eigenvalues(obj, k=3, steps=obj.dim)
    torch.testing.assert_close(torch.tensor(top, dtype=torch.float64), eigs.flip(0)[:3], atol=1e-9, rtol=1e-7)
    # a few steps are enough for the largest one (it is well separated here)
    assert hs.top_eigenvalues(obj, k=1, steps=12)[0] == pytest.approx(float(eigs[-1]), rel=1e-6)
    # all Ritz values with steps = dim: the whole spectrum
    H = hs.hessian(obj)
    torch.testing.assert_close(hs.lanczos(lambda v: H @ v, obj.dim, obj.dim), eigs, atol=1e-9, rtol=1e-7)
    # power iteration: the eigenvalue of largest magnitude
    lam, vec = hs.power_iteration(lambda v: H @ v, obj.dim, iters=500, tol=1e-12)
    biggest = eigs[eigs.abs().argmax()]
    assert lam == pytest.approx(float(biggest), rel=1e-6)
    torch.testing.assert_close(H @ vec, lam * vec, atol=1e-5 * abs(lam), rtol=0)
    assert hs.top_eigenvalues(obj, method="power", steps=500)[0] == pytest.approx(float(biggest), rel=1e-5)


def test_grad_norm_matches_plain_autograd_ce():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(25, 4)
    y = torch.randint(0, 3, (25,))
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    assert hs.grad_norm(model, x, y, "ce", batch_size=7) == pytest.approx(float(expected), rel=1e-5)


def test_ensemble_gradient_matches_each_member():
    torch.manual_seed(0)
    ens = Ensemble.from_seeds("mlp-mid", [0, 1, 2])
    x = torch.linspace(-1, 1, 23)[:, None]
    y = torch.sin(3 * x[:, 0])
    out = hs.ensemble_gradient(ens, x, y, loss="mse", batch_size=8)
    for i in range(3):
        m = ens.member(i)
        assert out["grad_norm"][i].item() == pytest.approx(hs.grad_norm(m, x, y, "mse"), rel=1e-5)
        with torch.no_grad():
            assert out["loss"][i].item() == pytest.approx(float((m(x)[:, 0] - y).pow(2).mean()), rel=1e-5)
    # the ensemble's own parameters are untouched and carry no gradient
    assert all(p.grad is None for p in ens.parameters())
