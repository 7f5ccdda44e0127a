"""analysis.critical_points: the closed forms against autograd and finite differences, the
Clarke subgradient against a brute-force search, Newton-MR on problems with a known critical point."""

from __future__ import annotations

import pytest
import torch

from dlscope import models
from dlscope.analysis import critical_points as cp
from dlscope.engine import fast_mlp
from dlscope.experiments.func_fit import f1, inputs


def _module_loss(name: str, x: torch.Tensor, y: torch.Tensor):
    """The zoo model's MSE as a function of its flat parameters, by torch.func (independent of cp)."""
    model = models.build(name).double()
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]

    def loss(flat):
        parts = {k: t.reshape(p.shape) for (k, p), t in zip(named, flat.split(sizes))}
        return torch.nn.functional.mse_loss(torch.func.functional_call(model, parts, (x,))[:, 0], y)

    return loss


def test_tanh_model_is_in_the_zoo_with_49_parameters():
    assert models.count_params(models.build("mlp-minratio-tanh")) == 49
    assert {m["name"]: m["params"] for m in models.zoo()}["mlp-minratio-tanh"] == 49


def test_tanh_gradient_and_hessian_equal_torch_func():
    x = inputs(30).double()
    y = f1(x[:, 0])
    theta = fast_mlp.init_flat("mlp-minratio-tanh", [0, 1, 2], dtype=torch.float64) * 3  # away from the near-linear regime
    loss, g = cp.tanh_mse_and_grad(theta, x, y)
    H = cp.tanh_hessians(theta, x, y)
    ref = _module_loss("mlp-minratio-tanh", x, y)
    for i in range(3):
        assert loss[i].item() == pytest.approx(ref(theta[i]).item(), rel=1e-13)
        assert torch.allclose(g[i], torch.func.grad(ref)(theta[i]), rtol=1e-12, atol=1e-14)
        assert torch.allclose(H[i], torch.func.hessian(ref)(theta[i]), rtol=1e-10, atol=1e-13)


def test_relu_hessian_equals_torch_func_away_from_kinks():
    x = inputs(20).double()
    y = f1(x[:, 0])
    theta = fast_mlp.init_flat("mlp-minratio", [4], dtype=torch.float64)
    assert not cp.kinks_at_points(theta, x)[0].any()
    H = cp.relu_hessians(theta, x, y)[0]
    assert torch.allclose(H, torch.func.hessian(_module_loss("mlp-minratio", x, y))(theta[0]), rtol=1e-10, atol=1e-13)


def _quadratic(A: torch.Tensor, b: torch.Tensor):
    """L(θ) = ½ θᵀAθ - bᵀθ for a batch of members: its only critical point is A⁻¹b."""

    def loss_and_grad(theta):
        return 0.5 * torch.einsum("mp,pq,mq->m", theta, A, theta) - theta @ b, theta @ A - b

    return loss_and_grad, lambda theta: A.expand(len(theta), -1, -1)


def test_newton_mr_finds_a_saddle_of_a_quadratic():
    A = torch.diag(torch.tensor([3.0, -2.0, 0.5, -0.1], dtype=torch.float64))  # indefinite: the critical point is a saddle
    b = torch.tensor([1.0, 2.0, -1.0, 0.3], dtype=torch.float64)
    loss_and_grad, hessians = _quadratic(A, b)
    state = cp.newton_mr_start(
        torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), loss_and_grad, 1e-10
    )
    for _ in range(3):
        cp.newton_mr_step(state, loss_and_grad, hessians, 1e-10)
    assert bool(state["done"].all())
    assert torch.allclose(state["best"], torch.linalg.solve(A, b).expand(5, -1), atol=1e-12)
    counts = cp.spectrum_counts(
        hessians(state["best"]), loss_and_grad(state["best"])[1], torch.zeros(5, dtype=torch.long), 1e-9, 1e-6
    )
    assert counts["n_negative"].tolist() == [2] * 5 and counts["n_positive"].tolist() == [2] * 5


def test_newton_mr_reaches_the_tanh_model_s_constant_critical_point():
    # w = b = a = 0, c = mean(y) is critical (each unit outputs 0 and its out-weight is 0); start close to it
    x = inputs(40).double()
    y = f1(x[:, 0])
    star = torch.zeros(1, 49, dtype=torch.float64)
    star[0, 48] = y.mean()
    assert cp.tanh_mse_and_grad(star, x, y)[1].norm() < 1e-15
    start = star + 1e-3 * torch.randn(4, 49, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lg, hs = (lambda t: cp.tanh_mse_and_grad(t, x, y)), (lambda t: cp.tanh_hessians(t, x, y))
    state = cp.newton_mr_start(start, lg, 1e-8)  # the experiment's tolerance (the point is degenerate: a = 0 leaves w, b free)
    for _ in range(40):
        cp.newton_mr_step(state, lg, hs, 1e-8)
    assert bool((state["best_gn"] < 1e-8).all())
    assert torch.allclose(lg(state["best"])[0], lg(star)[0].expand(4), rtol=1e-4)  # the same loss level: var(y)


def test_l2_objective_gradient_and_hessian_equal_torch_func():
    # the smooth model's phase-2 objective: MSE + (λ/2)||θ||²; the loss returned is the MSE alone
    x = inputs(30).double()
    y = f1(x[:, 0])
    lam = 1e-3
    theta = fast_mlp.init_flat("mlp-minratio-tanh", [0, 1, 2], dtype=torch.float64) * 3
    lg, hs = cp.l2_objective(lambda t: cp.tanh_mse_and_grad(t, x, y), lambda t: cp.tanh_hessians(t, x, y), lam)
    loss, g = lg(theta)
    H = hs(theta)
    mse = _module_loss("mlp-minratio-tanh", x, y)

    def ref(flat):
        return mse(flat) + 0.5 * lam * flat.square().sum()

    for i in range(3):
        assert loss[i].item() == pytest.approx(mse(theta[i]).item(), rel=1e-13)
        assert torch.allclose(g[i], torch.func.grad(ref)(theta[i]), rtol=1e-12, atol=1e-14)
        assert torch.allclose(H[i], torch.func.hessian(ref)(theta[i]), rtol=1e-10, atol=1e-13)
    m = cp.smooth_end_points(theta, x, y, 1e-8, lam)
    assert torch.equal(m["grad"], g) and torch.equal(m["hessian"], H) and torch.equal(m["loss"], loss)
    assert cp.l2_objective(lg, hs, 0.0) == (lg, hs)


def test_newton_mr_line_search_finds_a_saddle_of_a_quadratic():
    A = torch.diag(torch.tensor([3.0, -2.0, 0.5, -0.1], dtype=torch.float64))
    b = torch.tensor([1.0, 2.0, -1.0, 0.3], dtype=torch.float64)
    loss_and_grad, hessians = _quadratic(A, b)
    state = cp.newton_mr_start(
        torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), loss_and_grad, 1e-10
    )
    for _ in range(3):  # full pseudo-inverse steps (μ ~ 0) land on it
        cp.newton_mr_ls_step(state, loss_and_grad, hessians, 1e-10)
    assert bool(state["done"].all()) and max(state["steps"].tolist()) <= 2
    assert torch.allclose(state["best"], torch.linalg.solve(A, b).expand(5, -1), atol=1e-12)


def test_newton_mr_line_search_shortens_the_step_before_damping():
    # ||∇L||² of L = θ⁴/4 - θ (∇L = θ³ - 1, critical at θ = 1): from θ = 0.1 the Newton step (to 22.3)
    # overshoots so far that ||∇L||² rises; the line search takes a shorter step along it, leaves μ as it is, and converges
    def loss_and_grad(theta):
        return theta[:, 0] ** 4 / 4 - theta[:, 0], theta**3 - 1

    def hessians(theta):
        return (3 * theta**2)[:, :, None]

    state = cp.newton_mr_start(torch.tensor([[0.1], [-0.5]], dtype=torch.float64), loss_and_grad, 1e-12)
    g0 = state["start_gn"].clone()
    cp.newton_mr_ls_step(state, loss_and_grad, hessians, 1e-12)
    assert bool((state["best_gn"] < g0).all()) and bool((state["mu"] == cp.NEWTON_MU_START).all())
    assert 0 < float(state["theta"][0, 0]) < 22.3  # a shortened step along the Newton direction
    for _ in range(60):
        if bool(state["done"].all()):
            break
        cp.newton_mr_ls_step(state, loss_and_grad, hessians, 1e-12)
    assert bool(state["done"].all()) and torch.allclose(state["best"], torch.ones(2, 1, dtype=torch.float64))


def test_newton_mr_line_search_reaches_critical_points_of_the_regularised_tanh_model():
    # a small version of min-ratio's smooth trial: Adam on MSE + (λ/2)||θ||², then Newton-MR with the line search
    x = inputs(40).double()
    y = f1(x[:, 0])
    lg, hs = cp.l2_objective(lambda t: cp.tanh_mse_and_grad(t, x, y), lambda t: cp.tanh_hessians(t, x, y), 1e-3)
    theta = cp.adam_snapshots(
        fast_mlp.init_flat("mlp-minratio-tanh", list(range(6)), dtype=torch.float64), lg, 1e-2, cp.log_spaced_epochs(10, 300, 6)
    )
    state = cp.newton_mr_start(theta, lg, 1e-8)
    for _ in range(250):
        if bool(state["done"].all()):
            break
        cp.newton_mr_ls_step(state, lg, hs, 1e-8)
    assert int((state["best_gn"] < 1e-8).sum()) >= 5  # measured: 5 of 6 from iteration 200 on (one wanders at |g| ~ 1e-3)
    assert torch.allclose(lg(state["best"])[1].norm(dim=1), state["best_gn"])


def test_spectrum_counts_and_the_gradient_in_the_null_space():
    H = torch.diag(torch.tensor([2.0, -1.0, 1e-12, 0.0], dtype=torch.float64))[None]
    g = torch.tensor([[0.0, 0.0, 3.0, 4.0]], dtype=torch.float64)  # all in the near-null space
    c = cp.spectrum_counts(H, g, torch.tensor([1]), 1e-9, 1e-6)
    assert (c["n_positive"].item(), c["n_negative"].item(), c["n_zero"].item()) == (1, 1, 1)  # one zero is a pin's
    assert c["null_share"].item() == pytest.approx(1.0) and c["eig_min"].item() == -1.0


def test_finite_rows_marks_exploded_weights():
    theta = torch.zeros(4, 5, dtype=torch.float64)
    theta[1, 0], theta[2, 3] = 1e7, float("nan")
    gn = torch.tensor([1.0, 1.0, 1.0, float("inf")], dtype=torch.float64)
    assert cp.finite_rows(theta, gn).tolist() == [True, False, False, False]


def test_adam_snapshots_take_each_member_at_its_own_epoch():
    x = inputs(20).double()
    y = f1(x[:, 0])
    theta = fast_mlp.init_flat("mlp-minratio-tanh", [0, 0], dtype=torch.float64)  # two copies of one start
    lg = lambda t: cp.tanh_mse_and_grad(t, x, y)  # noqa: E731
    both = cp.adam_snapshots(theta, lg, 1e-2, torch.tensor([3, 7]))
    assert torch.equal(both[0], cp.adam_snapshots(theta[:1], lg, 1e-2, torch.tensor([3]))[0])
    assert torch.equal(both[1], cp.adam_snapshots(theta[:1], lg, 1e-2, torch.tensor([7]))[0])
    assert cp.log_spaced_epochs(10, 1000, 3).tolist() == [10, 100, 1000]


# --------------------------------------------------------------------------- kinks at data points (ReLU)

KINKS = ((6, 9), (20, 0))


def _with_kinks(n_points=20, seed=0):
    """mlp-minratio, two members, f1 on n_points; member 0 with units 6 and 20 put exactly on data
    points 9 and 0 (b_j = -w_j x_k)."""
    x = inputs(n_points).double()
    y = f1(x[:, 0])
    theta = fast_mlp.init_flat("mlp-minratio", [seed, seed + 1], dtype=torch.float64)
    h = 128
    for j, k in KINKS:
        theta[0, h + j] = -theta[0, j] * x[k, 0]
    return x, y, theta, h


def _loss(theta, x, y):
    return cp.relu_mse_and_grad(theta[None], x, y)[0][0]


def test_kinks_found_and_one_sided_gradients_match_finite_differences():
    x, y, theta, h = _with_kinks()
    at, k = cp.kinks_at_points(theta, x)
    assert at[0].nonzero()[:, 0].tolist() == [6, 20] and k[0, 6] == 9 and k[0, 20] == 0 and not at[1].any()
    loss, g0, q = cp.kink_gradient(theta, x, y, at, k)
    ref_loss, ref_g = cp.relu_mse_and_grad(theta, x, y)
    assert torch.allclose(loss, ref_loss, rtol=1e-14) and torch.allclose(g0[1], ref_g[1], rtol=1e-12, atol=1e-15)
    step = 1e-7
    for j, _ in KINKS:
        for i, side in ((h + j, "bias"), (j, "weight")):
            xk = float(x[k[0, j], 0])
            e = torch.zeros_like(theta[0])
            e[i] = step
            up = (_loss(theta[0] + e, x, y) - _loss(theta[0], x, y)) / step
            down = (_loss(theta[0], x, y) - _loss(theta[0] - e, x, y)) / step
            dz = 1.0 if side == "bias" else xk  # dz_kj / d(parameter)
            jump = float(q[0, j]) * dz
            on_side, off_side = (up, down) if dz > 0 else (down, up)
            assert on_side == pytest.approx(float(g0[0, i]) + jump, rel=1e-5, abs=1e-9)
            assert off_side == pytest.approx(float(g0[0, i]), rel=1e-5, abs=1e-9)
            assert abs(jump) > 1e-4  # a real kink: the one-sided derivatives differ


def test_clarke_min_norm_element_against_a_dense_grid():
    x, y, theta, h = _with_kinks()
    at, k = cp.kinks_at_points(theta, x)
    _, g0, q = cp.kink_gradient(theta, x, y, at, k)
    g, s = cp.clarke_grad(theta, x, y)
    grid = torch.linspace(0, 1, 401, dtype=torch.float64)
    sa, sb = torch.meshgrid(grid, grid, indexing="ij")
    cand = g0[0].expand(*sa.shape, -1).clone()
    for j, sj in ((6, sa), (20, sb)):
        xk = x[k[0, j], 0]
        cand[..., j] += sj * q[0, j] * xk
        cand[..., h + j] += sj * q[0, j]
    norms = cand.norm(dim=-1)
    best = norms.argmin()
    assert g[0].norm() <= norms.min() + 1e-15
    assert g[0].norm() == pytest.approx(float(norms.min()), rel=1e-4)
    assert float(s[0, 6]) == pytest.approx(float(sa.flatten()[best]), abs=2.5e-3)
    assert float(s[0, 20]) == pytest.approx(float(sb.flatten()[best]), abs=2.5e-3)
    assert 0.01 < float(s[0, 6]) < 0.99 and float(s[0, 20]) in (0.0, 1.0)
    assert torch.equal(g[1], g0[1]) and g[0].norm() <= g0[0].norm()


def test_restricted_hessian_is_the_second_derivative_along_the_pinned_manifold():
    # along a direction that keeps both kinks on their points, Q H Q's quadratic form is the loss's curvature
    x, y, theta, h = _with_kinks()
    at, k = cp.kinks_at_points(theta, x)
    Hq = cp.restricted_hessians(theta[:1], x, y, at[:1], k[:1])[0]
    d = torch.randn(theta.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for j, kk in KINKS:
        d[h + j] = -d[j] * x[kk, 0]  # δb_j = -δw_j x_k: the kink stays on x_k
    eps = 1e-4
    second = (_loss(theta[0] + eps * d, x, y) - 2 * _loss(theta[0], x, y) + _loss(theta[0] - eps * d, x, y)) / eps**2
    assert float(d @ Hq @ d) == pytest.approx(float(second), rel=1e-5)


def test_active_set_reaches_clarke_critical_points():
    x = inputs(40).double()
    y = f1(x[:, 0])
    # a little training first: from initialisation the walk is long
    theta = cp.adam_snapshots(
        fast_mlp.init_flat("mlp-minratio", list(range(4)), dtype=torch.float64),
        lambda t: cp.relu_mse_and_grad(t, x, y),
        1e-3,
        torch.full((4,), 150),
    )
    state = cp.active_set_start(theta, x, y, 1e-8)
    for _ in range(300):
        if bool(state["done"].all()):
            break
        cp.active_set_step(state, x, y, 1e-8)
    end = cp.active_set_end_points(state, x, y, 1e-8)
    m = cp.relu_end_points(end, x, y, 1e-8)
    assert bool((m["critical"] | m["kink_critical"]).all())
    ref = _module_loss("mlp-minratio", x, y)
    for i in m["critical"].nonzero()[:, 0].tolist():  # smooth ones: autograd on the ordinary module agrees
        assert torch.func.grad(ref)(end[i]).norm() < 1e-8
        assert (
            cp.spectrum_counts(m["hessian"][i : i + 1], m["grad"][i : i + 1], m["pins"][i : i + 1], 1e-9, 1e-6)[
                "n_negative"
            ].item()
            == 0
        )
