"""Exact Hessians, Hessian-vector products, Lanczos and the gradient norm of dlscope.analysis
checked against finite differences, closed forms and a second method (ported from the tests of
the former analysis/hessian.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlscope import analysis
from dlscope.analysis import curvature as cv
from dlscope.analysis.critical_points import min_ratio
from dlscope.analysis.gradient import ensemble_gradient
from dlscope.analysis.objective import Objective
from dlscope.engine import Ensemble


def tanh_mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).to(dtype)


def regression_data(n=40, d=2, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.sin(x.sum(1)) + 0.1 * torch.randn(n, generator=g, dtype=dtype)
    return x, y


def objective(model, x, y, loss="mse", batch_size=None):
    return Objective(model, (x, y), loss, batch_size=batch_size)


def hessian(obj):
    return obj.hessian()[0]


def gradient(obj, theta=None):
    return obj.grad(None if theta is None else theta[None])[0]


def eigenvalues(H):
    return torch.linalg.eigvalsh(H)


def fd_hessian(obj, theta, eps=1e-5):
    """Central differences of the autograd gradient, column by column."""
    cols = []
    for j in range(obj.dim):
        e = torch.zeros_like(theta)
        e[j] = eps
        cols.append((gradient(obj, theta + e) - gradient(obj, theta - e)) / (2 * eps))
    H = torch.stack(cols, 1)
    return (H + H.T) / 2


def test_exact_hessian_matches_finite_differences():
    x, y = regression_data()
    obj = objective(tanh_mlp(), x, y, "mse")
    H = hessian(obj)
    H_fd = fd_hessian(obj, obj.theta0[0])
    assert H.shape == (21, 21)
    torch.testing.assert_close(H, H_fd, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(eigenvalues(H), torch.linalg.eigvalsh(H_fd), atol=1e-7, rtol=1e-6)
    assert (eigenvalues(H) < 0).any()  # a random point of a non-convex loss: not a minimum


def test_relu_zoo_model_hessian_matches_finite_differences():
    """mlp-minratio (ReLU, the min-ratio experiment's model): exact vs finite differences.
    Piecewise quadratic in the last layer, so differences are exact away from kinks."""
    from dlscope import models
    from dlscope.experiments.func_fit import f1, inputs

    torch.manual_seed(3)
    model = models.build("mlp-minratio").double()
    x = inputs(50).double()
    obj = objective(model, x, f1(x[:, 0]), "mse")
    H = hessian(obj)
    torch.testing.assert_close(H, fd_hessian(obj, obj.theta0[0], eps=1e-6), atol=1e-6, rtol=1e-5)


def test_linear_least_squares_closed_form_and_minimum():
    """MSE of a linear model: H = 2/n AᵀA with A = [X, 1] (weight first, then bias); at the
    least-squares solution the gradient vanishes and every eigenvalue is positive."""
    x, y = regression_data(n=30, d=3)
    model = nn.Linear(3, 1).double()
    A = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    obj = objective(model, x, y, "mse")
    torch.testing.assert_close(hessian(obj), 2 / len(x) * A.T @ A)

    sol = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    with torch.no_grad():
        model.weight.copy_(sol[:3][None])
        model.bias.copy_(sol[3:])
    assert analysis.grad_norm(model, (x, y), "mse") < 1e-12
    eigs = eigenvalues(hessian(objective(model, x, y)))
    assert min_ratio(eigs) == 1.0
    assert min_ratio(eigs, rel_tol=1e-9) == 1.0
    # the loss at the minimum is the least-squares residual
    assert analysis.mean_loss_of(model, (x, y), "mse") == pytest.approx(float((A @ sol - y).pow(2).mean()), rel=1e-10)


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
    eigs = eigenvalues(hessian(objective(TwoScalars(), x, y)))
    c = 2 * (x * y).mean()
    torch.testing.assert_close(eigs, torch.stack([-c, c]))
    assert min_ratio(eigs) == 0.5
    # rounding-level "positive" eigenvalues only count without the relative tolerance
    tiny = torch.tensor([-1.0, 1e-17, 2.0], dtype=torch.float64)
    assert min_ratio(tiny) == pytest.approx(2 / 3)
    assert min_ratio(tiny, rel_tol=1e-12) == pytest.approx(1 / 3)


def test_hvp_equals_hessian_times_vector_and_chunks_agree():
    x, y = regression_data(n=37)
    obj = objective(tanh_mlp(seed=2), x, y, "mse")
    H = hessian(obj)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(obj.dim, generator=g, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(v[None])[0], H @ v)
    V = torch.randn(4, obj.dim, generator=g, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(V[None])[0], V @ H)
    torch.testing.assert_close(obj.hvp(V[None], obj.theta0)[0], V @ H)  # forward-over-reverse
    # chunking the data (uneven last chunk) changes nothing but memory
    chunked = objective(tanh_mlp(seed=2), x, y, "mse", batch_size=10)
    torch.testing.assert_close(hessian(chunked), H)
    torch.testing.assert_close(chunked.hvp(v[None])[0], H @ v)
    torch.testing.assert_close(gradient(chunked), gradient(obj))


def test_lanczos_matches_eigvalsh():
    x, y = regression_data(n=50)
    model = tanh_mlp(seed=4)
    obj = objective(model, x, y, "mse")
    eigs = eigenvalues(hessian(obj))
    top = analysis.top_eigenvalues(model, (x, y), "mse", k=3, max_steps=obj.dim, tol=1e-9)
    torch.testing.assert_close(torch.tensor(top.values, dtype=torch.float64), eigs.flip(0)[:3], atol=1e-9, rtol=1e-7)
    # a few steps are enough for the largest one (it is well separated here)
    assert analysis.top_eigenvalues(model, (x, y), "mse", k=1, max_steps=12).values[0] == pytest.approx(float(eigs[-1]), rel=1e-6)
    # all Ritz values with steps = dim: the whole spectrum
    H = hessian(obj)
    v0 = torch.randn(1, obj.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    T, _ = cv.lanczos(lambda V: V @ H, v0, obj.dim)
    torch.testing.assert_close(torch.linalg.eigvalsh(T[0]), eigs, atol=1e-9, rtol=1e-7)


def test_grad_norm_matches_plain_autograd_ce():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(25, 4)
    y = torch.randint(0, 3, (25,))
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    assert analysis.grad_norm(model, (x, y), "ce", batch_size=7) == pytest.approx(float(expected), rel=1e-5)


def test_ensemble_gradient_matches_each_member():
    torch.manual_seed(0)
    ens = Ensemble.from_seeds("mlp-mid", [0, 1, 2])
    x = torch.linspace(-1, 1, 23)[:, None]
    y = torch.sin(3 * x[:, 0])
    out = ensemble_gradient(ens, x, y, loss="mse", batch_size=8)
    for i in range(3):
        m = ens.member(i)
        assert out["grad_norm"][i].item() == pytest.approx(analysis.grad_norm(m, (x, y), "mse"), rel=1e-5)
        with torch.no_grad():
            assert out["loss"][i].item() == pytest.approx(float((m(x)[:, 0] - y).pow(2).mean()), rel=1e-5)
    # the ensemble's own parameters are untouched and carry no gradient
    assert all(p.grad is None for p in ens.parameters())
