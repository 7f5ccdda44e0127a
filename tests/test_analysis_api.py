"""dlscope.analysis on any model, checked against independent computations: exact Hessians
(torch.autograd.functional.hessian + eigvalsh), closed forms on quadratics, the model's own loss,
and coverage of the trace intervals on matrices with a known spectrum."""

from __future__ import annotations

import copy
import itertools
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlscope import analysis as an
from dlscope.analysis import curvature as cv
from dlscope.analysis.objective import Objective
from dlscope.engine import Ensemble


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These are tiny problems: on a loaded 2-core machine a second thread only waits (each small
    op then costs ~40 ms instead of ~0.1 ms, measured)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tanh_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def class_data(n=60, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def exact_hessian(model, x, y, loss="ce"):
    obj = Objective(model, (x, y), loss)
    H = torch.autograd.functional.hessian(lambda t: obj._member_loss(t, {}, x, y), obj.theta0[0])
    return (H + H.T) / 2


# --------------------------------------------------------------------------- curvature


def test_top_eigenvalues_equal_the_exact_hessians():
    model, (x, y) = tanh_mlp(), class_data()
    eigs = torch.linalg.eigvalsh(exact_hessian(model, x, y)).flip(0)
    got = an.top_eigenvalues(model, (x, y), k=3, tol=1e-10)
    assert got.converged
    torch.testing.assert_close(torch.tensor(got.values, dtype=torch.float64), eigs[:3], rtol=1e-7, atol=1e-10)
    assert 3 <= got.n_hvp <= 45  # one HVP per Lanczos step, capped at P


def test_batches_from_an_iterable_give_the_full_data_answer():
    model, (x, y) = tanh_mlp(), class_data()
    loader = [(x[s : s + 7], y[s : s + 7]) for s in range(0, len(x), 7)]  # uneven last batch
    whole = an.top_eigenvalues(model, (x, y), k=2, tol=1e-10).values
    torch.testing.assert_close(torch.tensor(an.top_eigenvalues(model, loader, k=2, tol=1e-10).values), torch.tensor(whole))


def test_eigenvectors_are_eigenvectors_of_the_exact_hessian():
    model, (x, y) = tanh_mlp(), class_data()
    H = exact_hessian(model, x, y)
    got = an.top_eigenvalues(model, (x, y), k=2, tol=1e-12, return_vectors=True)
    for lam, v in zip(got.values, got.vectors):
        torch.testing.assert_close(H @ v, lam * v, atol=1e-6, rtol=0)


def test_trace_estimates_cover_the_exact_trace():
    model, (x, y) = tanh_mlp(), class_data()
    exact = float(exact_hessian(model, x, y).trace())
    for method in ("hutch++", "hutchinson"):
        est = an.trace(model, (x, y), method=method, n_hvp=60, seed=3)
        assert est.ci[0] <= exact <= est.ci[1], (method, est, exact)
        assert est.n_hvp == 60 and est.ci[0] < est.value < est.ci[1]
    # Hutch++ with a sketch as large as the dimension is exact (the remainder is zero)
    P = sum(p.numel() for p in model.parameters())
    est = an.trace(model, (x, y), n_hvp=3 * P + 2)
    assert est.value == pytest.approx(exact, rel=1e-9)


def test_density_is_gauss_quadrature_of_each_start_vector():
    """SLQ with m steps integrates λᵖ exactly (p < 2m) against each vector's spectral measure:
    its moments equal vᵀHᵖv/‖v‖², computed here from the exact Hessian."""
    model, (x, y) = tanh_mlp(), class_data()
    H = exact_hessian(model, x, y)
    dens = an.spectral_density(model, (x, y), n_vectors=4, steps=8, seed=5)
    g = torch.Generator().manual_seed(5)  # the same Rademacher vectors, drawn the same way
    vs = [cv.rademacher((1, H.shape[0]), g)[0] for _ in range(4)]
    for p in (1, 2, 3, 7):
        want = torch.stack([v @ torch.linalg.matrix_power(H, p) @ v / (v @ v) for v in vs]).mean()
        assert float(dens.moment(p)) == pytest.approx(float(want), rel=1e-8)
    assert dens.weights.sum(-1).sub(1).abs().max() < 1e-10  # a probability measure per vector
    _, curve = dens.curve()
    assert torch.isfinite(curve).all() and curve.min() >= 0


def test_dense_spectrum_moments_match_the_exact_spectrum():
    """With as many steps as parameters, the SLQ nodes are the exact eigenvalues."""
    model, (x, y) = tanh_mlp(), class_data()
    eigs = torch.linalg.eigvalsh(exact_hessian(model, x, y))
    dens = an.spectral_density(model, (x, y), n_vectors=1, steps=len(eigs), seed=0)
    torch.testing.assert_close(dens.nodes[0], eigs, atol=1e-8, rtol=1e-8)


def known_spectrum(dim=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([30.0, 12.0, 5.0], dtype=torch.float64), torch.linspace(-1, 2, dim - 3, dtype=torch.float64)])
    return (Q * lam) @ Q.T, float(lam.sum())


@pytest.mark.parametrize("estimator", [cv.hutchinson_of, cv.hutchpp_of])
def test_95_percent_intervals_cover_the_trace_in_93_to_97_of_100_trials(estimator):
    A, truth = known_spectrum()
    matvec = lambda V: V @ A  # noqa: E731  (A symmetric: rows times A = A times columns)
    covered = 0
    for seed in range(100):
        _, low, high = estimator(matvec, 1, A.shape[0], 60, seed=seed)
        covered += int(low[0] <= truth <= high[0])
    assert 93 <= covered <= 97, covered


# --------------------------------------------------------------------------- sharpness


def quadratic_at_its_minimum(d=6, n=40, seed=0):
    """A linear least-squares model at its exact minimum: L(θ+δ) − L(θ) = ½ δᵀAδ, A = 2XᵀX/n."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w[None])
    return model, (X, X @ w), 2 * X.T @ X / n, w


def test_sharpness_on_a_quadratic_equals_the_closed_forms():
    model, data, A, w = quadratic_at_its_minimum()
    rho = 0.05
    sam = an.sharpness(model, data, loss="mse", kind="sam", radius=rho, steps=60)
    assert sam.value == pytest.approx(0.5 * rho**2 * float(torch.linalg.eigvalsh(A)[-1]), rel=1e-6)
    T = w.abs()  # adaptive: max ½ uᵀ(TAT)u over ‖u‖ ≤ ρ
    ada = an.sharpness(model, data, loss="mse", kind="adaptive", radius=rho, steps=60)
    assert ada.value == pytest.approx(0.5 * rho**2 * float(torch.linalg.eigvalsh(T[:, None] * A * T)[-1]), rel=1e-6)
    # keskar: the maximum of the convex ½ δᵀAδ over the box is at a corner. The search is a local
    # one (as Keskar et al.'s L-BFGS-B): a lower bound of the brute-force maximum over all 2^6 ...
    eps = 1e-3
    box = eps * (w.abs() + 1)
    corners = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=len(w))), dtype=torch.float64) * box
    best = float((0.5 * ((corners @ A) * corners).sum(1)).max())
    kes = an.sharpness(model, data, loss="mse", kind="keskar", radius=eps)
    assert 0 < kes.value <= 100 * best / (1 + kes.loss) * (1 + 1e-9)
    # ... and exact when A is diagonal (orthogonal inputs): ½ Σ a_i box_i²
    U, _ = torch.linalg.qr(data[0])
    Xd = U * torch.arange(1.0, 7.0, dtype=torch.float64)
    diag_data = (Xd, Xd @ w)
    a = 2 * (Xd * Xd).sum(0) / len(Xd)
    kes = an.sharpness(model, diag_data, loss="mse", kind="keskar", radius=eps)
    assert kes.value == pytest.approx(100 * float(0.5 * (a * box**2).sum()) / (1 + kes.loss), rel=1e-6)
    # average: E ½ δᵀAδ = ½ σ² tr(A) for δ ~ N(0, σ²I); the interval must cover it
    sigma = 0.01
    avg = an.sharpness(model, data, loss="mse", kind="average", radius=sigma, steps=200, seed=1)
    truth = 0.5 * sigma**2 * float(A.trace())
    assert avg.ci[0] <= truth <= avg.ci[1]


def test_sharpness_agrees_with_finite_differences_of_the_loss():
    """The reported maximum is a loss actually reached: rebuild it from the model by hand."""
    model, (x, y) = tanh_mlp(), class_data()
    s = an.sharpness(model, (x, y), kind="sam", radius=0.05, steps=10)
    base = float(F.cross_entropy(model(x), y).detach())
    assert s.loss == pytest.approx(base, rel=1e-12)
    assert s.value == pytest.approx(s.max_loss - s.loss, rel=1e-12) and s.value > 0
    # a rise of ½ρ²λmax is the quadratic model's answer: the network's is close to it at small ρ
    lam = an.top_eigenvalues(model, (x, y), tol=1e-8).values[0]
    g = float(
        torch.cat([p.reshape(-1) for p in torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))]).norm()
    )
    assert s.value <= 0.05 * g + 0.5 * 0.05**2 * lam * 1.5  # first + second order bound


def relu_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def test_adaptive_sharpness_is_scale_invariant_and_sam_is_not():
    model, (x, y) = relu_net(), class_data()
    scaled = copy.deepcopy(model)
    with torch.no_grad():  # layer 1 ×10 (weight and bias), layer 2's weight ×1/10: the same function
        scaled[0].weight.mul_(10)
        scaled[0].bias.mul_(10)
        scaled[2].weight.div_(10)
    torch.testing.assert_close(scaled(x), model(x))
    a0 = an.sharpness(model, (x, y), kind="adaptive", radius=0.5).value
    a1 = an.sharpness(scaled, (x, y), kind="adaptive", radius=0.5).value
    s0 = an.sharpness(model, (x, y), kind="sam", radius=0.5).value
    s1 = an.sharpness(scaled, (x, y), kind="sam", radius=0.5).value
    assert abs(a1 - a0) <= 0.01 * abs(a0)
    assert abs(s1 - s0) >= 0.10 * abs(s0)


# --------------------------------------------------------------------------- plane


def test_plane_centre_is_the_models_loss_and_given_directions_reach_other_models():
    model, (x, y) = tanh_mlp(0), class_data()
    plane = an.loss_plane(model, (x, y), steps=5, seed=0)
    assert plane.loss.shape == (5, 5)
    assert float(plane.center_loss) == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-14)
    assert plane.loss.std() > 0
    # through three models: (1, 0) is model a, (0, 1) is model b
    a, b = tanh_mlp(1), tanh_mlp(2)
    plane = an.loss_plane(model, (x, y), steps=3, directions=(a, b))
    assert float(plane.loss[2, 1]) == pytest.approx(F.cross_entropy(a(x), y).item(), rel=1e-12)
    assert float(plane.loss[1, 2]) == pytest.approx(F.cross_entropy(b(x), y).item(), rel=1e-12)
    with pytest.raises(ValueError, match="odd"):
        an.loss_plane(model, (x, y), steps=4)


def test_random_directions_are_filter_normalised():
    model, (x, y) = relu_net(), class_data()
    plane = an.loss_plane(model, (x, y), steps=3, seed=1)
    obj = Objective(model, (x, y))
    for d in plane.directions:
        parts, ref = obj.unflatten(d), obj.unflatten(obj.theta0[0])
        for k in obj.names:
            if ref[k].dim() == 1:
                assert parts[k].abs().max() == 0  # biases get no component
            else:
                torch.testing.assert_close(parts[k].norm(dim=1), ref[k].norm(dim=1))


# --------------------------------------------------------------------------- batch norm and dropout


class BNDropCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def bn_cnn_and_data():
    torch.manual_seed(0)
    model = BNDropCNN()
    x = torch.randn(24, 3, 8, 8)
    y = torch.randint(0, 10, (24,))
    model.train()
    for _ in range(3):  # non-trivial running statistics
        model(x)
    return model, (x, y)


def test_batchnorm_dropout_model_leaves_every_call_unchanged():
    model, data = bn_cnn_and_data()
    model.bn.eval()  # a mixed mode: must come back mixed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    calls = [
        lambda: an.top_eigenvalues(model, data, k=1, max_steps=5),
        lambda: an.trace(model, data, n_hvp=9),
        lambda: an.spectral_density(model, data, n_vectors=1, steps=4),
        lambda: an.sharpness(model, data, kind="keskar", steps=2),
        lambda: an.sharpness(model, data, kind="average", steps=3),
        lambda: an.loss_plane(model, data, steps=3),
    ]
    results = [c() for c in calls]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(r.info["mode"] == "eval" for r in results)
    # eval mode means the running statistics and no dropout: the plane's centre is model.eval()'s loss
    ref = copy.deepcopy(model).eval()
    assert float(results[-1].center_loss) == pytest.approx(F.cross_entropy(ref(data[0]), data[1]).item(), rel=1e-6)


def test_train_mode_with_dropout_is_refused_naming_the_module():
    model, data = bn_cnn_and_data()
    with pytest.raises(an.NondeterministicObjective, match="'drop'.*Dropout"):
        an.top_eigenvalues(model, data, mode="train")
    model.drop.p = 0.0  # batch statistics alone are deterministic: train mode then runs
    r = an.top_eigenvalues(model, data, mode="train", max_steps=5)
    assert r.info["mode"] == "train" and torch.isfinite(torch.tensor(r.values)).all()


# --------------------------------------------------------------------------- ensembles


def test_ensemble_measures_equal_each_members_own():
    members = [tanh_mlp(s) for s in range(3)]
    ens = Ensemble.from_members(members, mode="vmap")
    x, y = class_data()
    eig = an.top_eigenvalues(ens, (x, y), k=2, tol=1e-10)
    sam = an.sharpness(ens, (x, y), kind="sam", steps=5)
    plane = an.loss_plane(ens, (x, y), steps=3)
    tr = an.trace(ens, (x, y), n_hvp=45)
    assert plane.loss.shape == (3, 3, 3) and len(tr.ci) == 3
    for i, m in enumerate(members):
        torch.testing.assert_close(
            torch.tensor(eig.values[i]), torch.tensor(an.top_eigenvalues(m, (x, y), k=2, tol=1e-10).values)
        )
        assert sam.value[i] == pytest.approx(an.sharpness(m, (x, y), kind="sam", steps=5).value, rel=1e-9)
        assert float(plane.center_loss[i]) == pytest.approx(F.cross_entropy(m(x), y).item(), rel=1e-12)
        exact = float(exact_hessian(m, x, y).trace())
        assert tr.ci[i][0] <= exact <= tr.ci[i][1]


def test_adapters_use_the_same_conventions():
    model, (x, y) = tanh_mlp(), class_data()
    g = torch.cat([p.reshape(-1) for p in torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))])
    assert an.grad_norm(model, (x, y)) == pytest.approx(float(g.norm()), rel=1e-10)
    path = an.interpolation_path(model, tanh_mlp(1), (x, y), [0.0, 1.0])
    assert path["loss"][0] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-12)
    assert path["loss"][1] == pytest.approx(F.cross_entropy(tanh_mlp(1)(x), y).item(), rel=1e-12)
    with pytest.raises(ValueError, match="unknown loss"):
        an.trace(model, (x, y), loss="hinge")


def test_both_hvp_backends_agree_on_an_ensemble_and_a_batchnorm_cnn():
    ens = Ensemble.from_members([tanh_mlp(s) for s in range(3)], mode="vmap")
    x, y = class_data()
    V = torch.randn(3, 4, ens.n_params(), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    graph, forward = Objective(ens, (x, y)).hvp(V), Objective(ens, (x, y), hvp_backend="forward").hvp(V)
    torch.testing.assert_close(graph, forward, rtol=1e-10, atol=1e-12)
    model, data = bn_cnn_and_data()
    graph, forward = Objective(model, data), Objective(model, data, hvp_backend="forward")
    W = torch.randn(1, 2, graph.dim, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(graph.hvp(W), forward.hvp(W), rtol=1e-4, atol=1e-5)


def test_analysis_does_not_import_engine():
    import ast
    from pathlib import Path

    import dlscope.analysis

    for path in Path(dlscope.analysis.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "engine" not in (node.module or ""), f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any("engine" in a.name for a in node.names), path.name


# --------------------------------------------------------------------------- shared Lanczos + trace, PyHessian


def test_eigenvalues_and_trace_together_equal_the_exact_hessians_per_member():
    members = [tanh_mlp(s) for s in range(3)]
    x, y = class_data()
    eig, tr = an.top_eigenvalues_and_trace(
        Ensemble.from_members(members, mode="vmap"), (x, y), k=2, tol=1e-10, trace_rtol=0.05, max_trace_hvp=100, seed=4
    )
    for i, m in enumerate(members):
        H = exact_hessian(m, x, y)
        lam = torch.linalg.eigvalsh(H).flip(0)
        torch.testing.assert_close(torch.tensor(eig.values[i], dtype=torch.float64), lam[:2], rtol=1e-7, atol=1e-10)
        assert tr.ci[i][0] <= float(H.trace()) <= tr.ci[i][1]
        assert tr.ci[i][1] - tr.ci[i][0] > 0
    # the interval's stop rule held for every member, or the budget ran out
    assert all((b - a) / 2 <= 0.05 * abs(v) for v, (a, b) in zip(tr.value, tr.ci)) or tr.info["hutchinson_samples"] == 100
    assert tr.n_hvp == eig.n_hvp + tr.info["hutchinson_samples"]


def test_each_member_of_an_ensemble_stops_on_its_own_tolerance():
    """An ensemble is measured member by member (graph products): each member's eigenvalues, trace
    and budget are those it gets measured alone with the same start and Rademacher vectors, so a
    member that converges early does not run on with the slowest one."""
    members = [tanh_mlp(s) for s in range(3)]
    x, y = class_data()
    ens = Ensemble.from_members(members, mode="vmap")
    kw = dict(k=1, tol=1e-3, trace_rtol=0.3, min_trace_hvp=10, max_trace_hvp=60, seed=2)
    eig, tr = an.top_eigenvalues_and_trace(ens, (x, y), **kw)
    steps, samples = tr.info["lanczos_steps_each"], tr.info["hutchinson_samples_each"]
    assert eig.n_hvp == max(steps) and tr.info["hutchinson_samples"] == max(samples)
    obj = Objective(ens, (x, y))
    v0 = torch.randn(obj.n, obj.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for i in range(3):
        top, conv, (mean, low, high), s, m, exact = cv._eig_and_trace(
            obj.member(i), v0[i : i + 1], 1, 1e-3, 100, 0.3, 10, 60, 2, 0.95, 10, rows=slice(i, i + 1), n_rows=3
        )
        assert (s, m) == (steps[i], samples[i])
        assert eig.values[i] == top[0].tolist() and eig.converged[i] == bool(conv[0])
        assert tr.value[i] == float(exact[0] + mean[0])
    assert len(set(steps)) > 1 or len(set(samples)) > 1  # the members did not all need the same budget


def test_lanczos_basis_covering_the_space_gives_the_exact_trace():
    """With as many Lanczos steps as parameters the remainder is zero: the trace is Σ αⱼ."""
    model, (x, y) = tanh_mlp(), class_data()
    H = exact_hessian(model, x, y)
    # tol < 0: Lanczos never stops early, it runs all P steps
    eig, tr = an.top_eigenvalues_and_trace(model, (x, y), tol=-1.0, max_steps=H.shape[0], min_trace_hvp=10, max_trace_hvp=10)
    assert eig.n_hvp == H.shape[0]
    assert tr.value == pytest.approx(float(H.trace()), rel=1e-9)
    assert tr.ci[1] - tr.ci[0] == pytest.approx(0, abs=1e-6)


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(36, 5), nn.Softmax(dim=1)
    ).double()


def cnn_data(n=80, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 5, (n,), generator=g)


def exact_hessian_of(model, x, y):
    obj = Objective(model, (x, y))
    H = torch.autograd.functional.hessian(
        lambda t: F.cross_entropy(torch.func.functional_call(obj.module, obj.unflatten(t), (x,)), y), obj.theta0[0]
    )
    return (H + H.T) / 2


def test_pyhessian_algorithms_and_dlscope_agree_with_the_exact_hessian_of_a_cnn():
    """bench/pyhessian_reference.py (PyHessian's power iteration and Hutchinson, as the benchmark
    times them) and dlscope on a CNN of 297 parameters whose Hessian is computed exactly."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from pyhessian_reference import pyhessian_style

    x, y = cnn_data()
    for seed in range(2):
        model = small_cnn(seed).eval()
        lam = torch.linalg.eigvalsh(exact_hessian_of(model, x, y))
        trace = float(lam.sum())
        ref = pyhessian_style(model, x, y, tol=1e-6, max_iter=200, seed=seed)
        largest_in_size = float(lam[lam.abs().argmax()])
        assert ref["top"] == pytest.approx(largest_in_size, rel=1e-3)  # power iteration: largest |λ|
        eig, tr = an.top_eigenvalues_and_trace(model, (x, y), tol=1e-8, trace_rtol=0.2, seed=seed)
        assert eig.values[0] == pytest.approx(float(lam[-1]), rel=1e-6)  # Lanczos: the largest λ
        assert tr.ci[0] <= trace <= tr.ci[1]
        assert ref["trace_ci"][0] <= trace <= ref["trace_ci"][1]


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")  # PyHessian's own call
def test_pyhessian_package_matches_its_transcription():
    """Only where the `pyhessian` package (PyPI 0.1) can be imported: its eigenvalue equals the
    transcription's and the exact Hessian's largest-in-size one, and the 95% interval of its
    trace samples covers the exact trace, as the transcription's does (other random vectors)."""
    pyhessian = pytest.importorskip("pyhessian")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from pyhessian_reference import pyhessian_style

    x, y = cnn_data()
    model = small_cnn(0).eval()
    ref = pyhessian_style(model, x, y, tol=1e-6, max_iter=200)
    torch.manual_seed(0)
    package = pyhessian.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    assert package.eigenvalues(maxIter=1000, tol=1e-6)[0][0] == pytest.approx(ref["top"], rel=1e-3)
    lam = torch.linalg.eigvalsh(exact_hessian_of(model, x, y))
    assert ref["top"] == pytest.approx(float(lam[lam.abs().argmax()]), rel=1e-3)
    samples = torch.tensor(package.trace(maxIter=1000, tol=1e-3))
    half = 1.96 * samples.std() / len(samples) ** 0.5
    assert abs(float(samples.mean() - lam.sum())) <= half
    assert ref["trace_ci"][0] <= float(lam.sum()) <= ref["trace_ci"][1]


def test_plane_points_equal_the_loss_of_the_moved_model():
    """The plane's fast path (chunked, channels-last) against a plain forward pass of a copy of
    the model with its weights moved to each grid point, on a float32 CNN."""
    model = small_cnn(1).float().eval()
    x, y = cnn_data(300)
    x = x.float()
    plane = an.loss_plane(model, (x, y), steps=5, seed=2)
    with torch.no_grad():
        assert float(plane.center_loss) == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)
    assert float(plane.center_loss) == an.mean_loss_of(model, (x, y))  # the same path: exactly
    obj = Objective(model, (x, y))
    d1, d2 = plane.directions
    for i, j in [(0, 0), (0, 4), (1, 3), (4, 2)]:
        moved = copy.deepcopy(model)
        theta = obj.theta0[0] + plane.alphas[i] * d1 + plane.betas[j] * d2
        torch.nn.utils.vector_to_parameters(theta, moved.parameters())
        with torch.no_grad():
            want = F.cross_entropy(moved(x), y).item()
        assert float(plane.loss[i, j]) == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------------------- the one list of measures


def test_every_measure_of_the_list_is_read_back_split_and_shown_from_its_declaration():
    """analysis.measures.MEASURES: each measure's result, on one model and on an ensemble, passes
    its own shape check, splits per member, and gives a line, table rows and cells; the study's
    columns are the ones its rows and metrics have always had."""
    from dlscope.analysis import measures as ms
    from dlscope.findings import jsonable
    from dlscope.report.curvature_folder import measure_problem, per_model, summary_table

    x, y = class_data(n=24)
    budget = ms.Budget(k=2, trace_hvp=9, sharpness_steps=2, density_vectors=1, density_steps=4, plane_steps=3)
    ens = Ensemble.from_members([tanh_mlp(s) for s in range(2)], mode="vmap")
    one = {m.name: jsonable(m.compute(tanh_mlp(), (x, y), budget)) for m in ms.MEASURES}
    both = {m.name: jsonable(m.compute(ens, (x, y), budget)) for m in ms.MEASURES}
    for m in ms.MEASURES:
        assert measure_problem(m.name, one[m.name]) is None and measure_problem(m.name, both[m.name], 2) is None, m.name
        assert measure_problem(m.name, both[m.name]) is not None, m.name  # an ensemble's is not one model's
        assert m.one_line(one[m.name]) and isinstance(m.table_rows(one[m.name]), list)
        assert all(isinstance(text, str) for _, text in m.table_cells(both[m.name], 1))
    rows = per_model(both, ["a", "b"])
    assert rows[1]["trace"]["value"] == both["trace"]["value"][1]
    head, table = summary_table({**both, "per_model": rows})
    assert head[0] == "model" and len(table) == 2 and all(len(r) == len(head) for r in table)
    study = ms.Budget(sharpness_kinds=ms.STUDY_SHARPNESS)
    assert ms.study_fields(study) == ("top_eigenvalue", "trace", "trace_ci", "keskar")
    assert ms.panels(study) == [
        ("top_eigenvalue", "top Hessian eigenvalue λ₁"),
        ("trace", "Hessian trace"),
        ("keskar", "Keskar ε-sharpness (%)"),
    ]
    assert jsonable({"a": [1.0, float("nan")], "n": 3, "b": (float("inf"),)}) == {"a": [1.0, None], "n": 3, "b": [None]}
