"""min-ratio: Newton-MR reaches critical points, the end points' numbers agree with an independent
autograd computation, the claims give the verdicts they should, and a diverging run is recorded."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dlscope import findings, models
from dlscope.experiments import min_ratio
from dlscope.experiments.base import TrialContext, resolve
from dlscope.experiments.func_fit import f1, inputs
from dlscope.runner import run_experiment
from dlscope.store import RunStore

CPU = torch.device("cpu")


def _row(seed, loss, grad_norm, ratio, cls=None, n_zero=100, dead=20):
    cls = cls or ("critical point" if grad_norm < 1e-8 else "not converged")
    return {"seed": seed, "loss": loss, "grad_norm": grad_norm, "min_ratio": ratio, "min_ratio_nonzero": ratio,
            "class": cls, "n_zero": n_zero, "dead_units": dead, "n_params": 385}  # fmt: skip


def _verdicts(rows):
    cfg = resolve(min_ratio, "full")
    return {f.id: f for f in min_ratio.claims(cfg, rows)}


def test_claims_clearly_shown():
    # 100 critical points; the lower the loss, the higher the ratio
    rows = [_row(i, 10 ** (-3 - i / 20), 1e-12, 0.3 + i / 400) for i in range(100)]
    v = _verdicts(rows)
    assert v["critical-points-reached"].verdict == findings.SHOWN and v["critical-points-reached"].n == 100
    f = v["ratio-rises-as-loss-falls"]
    assert f.verdict == findings.SHOWN and f.value == pytest.approx(-1.0) and f.ci[1] < 0 and f.n == 100


def test_claims_clearly_not_shown():
    # none critical: the premise fails; among critical points (here all, by a looser tol), ratio falls with loss
    rows = [_row(i, 10 ** (-3 - i / 20), 1e-3, 0.6 - i / 400) for i in range(100)]
    v = _verdicts(rows)
    assert v["critical-points-reached"].verdict == findings.NOT_SHOWN and v["critical-points-reached"].value == 0
    assert v["ratio-rises-as-loss-falls"].verdict == findings.INCONCLUSIVE  # no critical point to judge from
    cfg = {**resolve(min_ratio, "full"), "grad_tol": 1.0}
    f = {f.id: f for f in min_ratio.claims(cfg, rows)}["ratio-rises-as-loss-falls"]
    assert f.verdict == findings.NOT_SHOWN and f.value == pytest.approx(1.0)


def test_claims_undecidable():
    rng = np.random.default_rng(0)
    # 88 of 100 critical: the Wilson interval straddles 90%; ratio unrelated to loss
    rows = [_row(i, float(rng.uniform(1e-4, 1e-3)), 1e-12 if i < 88 else 1e-4, float(rng.uniform(0.3, 0.4))) for i in range(100)]
    v = _verdicts(rows)
    assert v["critical-points-reached"].verdict == findings.INCONCLUSIVE
    lo, hi = v["critical-points-reached"].ci
    assert lo < 0.9 < hi and v["critical-points-reached"].value == 0.88
    f = v["ratio-rises-as-loss-falls"]
    assert f.verdict == findings.INCONCLUSIVE and f.n == 88 and f.ci[0] < 0 < f.ci[1]


def _independent(theta: torch.Tensor, x: torch.Tensor):
    """Gradient norm and Hessian eigenvalues of one end point by autograd on the ordinary module."""
    torch.manual_seed(0)
    model = models.build("mlp-minratio").double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    y = f1(x[:, 0])

    def loss(flat):
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split(sizes), shapes))))
        return torch.nn.functional.mse_loss(torch.func.functional_call(model, parts, (x,))[:, 0], y)

    flat = theta.double().clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(flat), flat)
    H = torch.autograd.functional.hessian(loss, theta.double())
    return g.norm().item(), torch.linalg.eigvalsh(H)


def test_newton_reaches_critical_points_and_the_end_points_check_out():
    # 8 points: 128 ReLU units can interpolate them, so zero-loss critical points exist near
    # phase 1's end (with 300 points they may not: see the module's docstring)
    cfg = resolve(min_ratio, "smoke", ["points=8", "phase1_steps=200", "phase1_lr=1e-2", "newton_steps=15", "phase2=newton-mr"])
    r = min_ratio.train_and_measure(cfg, TrialContext(CPU))
    pts = r["points"]
    assert all(p["class"] == "critical point" and p["grad_norm"] < 1e-8 for p in pts)  # 8 points: interpolated, r = 0
    assert all(p["grad_norm_start"] > 1e-6 for p in pts)  # phase 1 alone had not got there
    x = inputs(8).double()
    for i in (0, 3):
        gn, eigs = _independent(r["end_params"][i], x)
        assert gn < 1e-8 and gn == pytest.approx(pts[i]["grad_norm"], rel=1e-3, abs=1e-12)
        zero = cfg["eig_rel_tol"] * eigs.abs().max()
        assert int((eigs > zero).sum()) == pts[i]["n_positive"]
        assert int((eigs < -zero).sum()) == pts[i]["n_negative"]
        assert eigs[-1].item() == pytest.approx(pts[i]["eig_max"], rel=1e-9)
        assert pts[i]["min_ratio"] == pytest.approx(float((eigs > zero).double().mean()))


def test_smoke_summary_verdicts_recompute_from_its_rows(tmp_path, data_dir):
    res = run_experiment("min-ratio", "smoke", out=tmp_path, data_dir=data_dir, progress=False)
    assert res.ok
    s = json.loads((res.out_dir / "summary.json").read_text())
    rows, tol = s["results"], 1e-8
    assert [r["seed"] for r in rows] == list(range(6))
    assert {f["id"] for f in s["findings"]} >= {"critical-points-reached", "ratio-rises-as-loss-falls"}
    recorded = {f["id"]: f for f in s["findings"]}
    # the premise, recomputed by hand: k of n below tol, Wilson's interval against 90%
    k, n = sum(r["grad_norm"] < tol and not r["kinks_at_points"] for r in rows), len(rows)
    z = 1.959963984540054
    centre, half = (k / n + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(k / n * (1 - k / n) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    verdict = "shown" if centre - half >= 0.9 else "not shown" if centre + half < 0.9 else "inconclusive"
    assert recorded["critical-points-reached"]["verdict"] == verdict
    assert recorded["critical-points-reached"]["value"] == pytest.approx(k / n)
    # every verdict again through the claim functions, from the JSON rows alone
    cfg = RunStore(tmp_path, "min-ratio").config()
    again = {f.id: f.as_dict() for f in min_ratio.claims(cfg, rows)}
    for ident, f in recorded.items():
        assert again[ident]["verdict"] == f["verdict"] and again[ident]["n"] == f["n"]
    for r in rows:
        assert r["class"] in min_ratio.CLASSES
        assert (r["class"] == "critical point") == (r["grad_norm"] < tol and not r["kinks_at_points"])
        assert (r["class"] in ("critical point", "kink-critical")) == (r["clarke_grad_norm"] < tol)
        assert r["n_positive"] + r["n_negative"] + r["n_zero"] == r["hessian_dim"] == 385 - (r["class"] == "kink-critical") * len(r["kinks_at_points"])
        assert r["n_zero"] >= 3 * r["dead_units"]  # a dead unit's three parameters have zero curvature
    assert (res.out_dir / "figures" / "min_ratio.png").stat().st_size > 5000


def test_a_diverging_run_is_recorded_and_drawn(tmp_path):
    res = run_experiment("min-ratio", "smoke", out=tmp_path, progress=False,
                         overrides=["phase1_lr=1e300", "phase1_steps=20", "newton_steps=2"])  # fmt: skip
    assert res.ok
    rows = res.summary["results"]
    assert rows and all(r["class"] == "diverged" and r["diverged"] for r in rows)
    assert res.summary["classes"]["diverged"] == len(rows)
    assert {f["id"]: f["verdict"] for f in res.summary["findings"]}["critical-points-reached"] == "not shown"
    json.loads((res.out_dir / "summary.json").read_text())  # valid JSON (NaN written as null)


def test_adam_phase2_still_runs():
    cfg = resolve(min_ratio, "smoke", ["phase2=adam", "phase1_steps=50", "phase2_steps=20"])
    r = min_ratio.train_and_measure(cfg, TrialContext(CPU))
    for p in r["points"]:
        assert p["grad_norm"] <= p["grad_norm_start"] * (1 + 1e-12) and p["phase2_steps"] <= 20


# --------------------------------------------------------------------------- kinks at data points


KINKS = ((6, 9), (20, 0))


def _with_kinks(n_points=20, seed=0):
    """mlp-minratio's spec, two members, f1 on n_points; member 0 with units 6 and 20 put exactly
    on data points 9 and 0 (b_j = -w_j x_k)."""
    spec = min_ratio.fast_mlp.spec_of_model("mlp-minratio")
    x = inputs(n_points).double()
    y = f1(x[:, 0])
    theta = min_ratio.fast_mlp.init_flat("mlp-minratio", [seed, seed + 1], dtype=torch.float64)
    h = spec.widths[1]
    for j, k in KINKS:
        theta[0, h + j] = -theta[0, j] * x[k, 0]
    return spec, x, y, theta, h


def _loss(theta, spec, x, y):
    return min_ratio.fast_mlp.mse_and_grad(theta[None], spec, x[None], y[None])[0][0]


def test_kinks_found_and_one_sided_gradients_match_finite_differences():
    spec, x, y, theta, h = _with_kinks()
    at, k = min_ratio.kinks_at_points(theta, spec, x)
    assert at[0].nonzero()[:, 0].tolist() == [6, 20] and k[0, 6] == 9 and k[0, 20] == 0 and not at[1].any()
    loss, g0, q = min_ratio.kink_gradient(theta, spec, x, y, at, k)
    # away from the kinks, the ordinary gradient (the hand-written backward of the fast MLP path)
    ref_loss, ref_g = min_ratio.fast_mlp.mse_and_grad(theta, spec, x.expand(2, -1, 1), y.expand(2, -1))
    assert torch.allclose(loss, ref_loss, rtol=1e-14) and torch.allclose(g0[1], ref_g[1], rtol=1e-12, atol=1e-15)
    step = 1e-7
    for j, _ in KINKS:
        for i, side in ((h + j, "bias"), (j, "weight")):
            xk = float(x[k[0, j], 0])
            # a move that raises z_kj = w_j x_k + b_j switches the pair on (ReLU'(0) = 1 on that side)
            e = torch.zeros_like(theta[0])
            e[i] = step
            up = (_loss(theta[0] + e, spec, x, y) - _loss(theta[0], spec, x, y)) / step
            down = (_loss(theta[0], spec, x, y) - _loss(theta[0] - e, spec, x, y)) / step
            dz = 1.0 if side == "bias" else xk  # dz_kj / d(parameter)
            jump = float(q[0, j]) * dz
            on_side, off_side = (up, down) if dz > 0 else (down, up)
            assert on_side == pytest.approx(float(g0[0, i]) + jump, rel=1e-5, abs=1e-9)
            assert off_side == pytest.approx(float(g0[0, i]), rel=1e-5, abs=1e-9)
            assert abs(jump) > 1e-4  # a real kink: the one-sided derivatives differ


def test_clarke_min_norm_element_against_a_dense_grid():
    spec, x, y, theta, h = _with_kinks()
    at, k = min_ratio.kinks_at_points(theta, spec, x)
    _, g0, q = min_ratio.kink_gradient(theta, spec, x, y, at, k)
    g, s = min_ratio.clarke_grad(theta, spec, x, y)
    # brute force over the box [0, 1]^2 of the two kinks' ReLU'(0)
    grid = torch.linspace(0, 1, 401, dtype=torch.float64)
    sa, sb = torch.meshgrid(grid, grid, indexing="ij")
    cand = g0[0].expand(*sa.shape, -1).clone()
    for j, sj in ((6, sa), (20, sb)):
        xk = x[k[0, j], 0]
        cand[..., j] += sj * q[0, j] * xk
        cand[..., h + j] += sj * q[0, j]
    norms = cand.norm(dim=-1)
    best = norms.argmin()
    assert g[0].norm() <= norms.min() + 1e-15  # nothing on the grid is shorter
    assert g[0].norm() == pytest.approx(float(norms.min()), rel=1e-4)
    assert float(s[0, 6]) == pytest.approx(float(sa.flatten()[best]), abs=2.5e-3)
    assert float(s[0, 20]) == pytest.approx(float(sb.flatten()[best]), abs=2.5e-3)
    assert 0.01 < float(s[0, 6]) < 0.99 and float(s[0, 20]) in (0.0, 1.0)  # one inside the box, one clipped at its edge
    assert torch.equal(g[1], g0[1]) and g[0].norm() <= g0[0].norm()  # no kink: the gradient itself


def test_active_set_reaches_clarke_critical_points_where_newton_mr_stalls():
    # smoke's 40 points; plain Newton-MR gets 60 iterations (an eigendecomposition each), the active set 100
    # least-squares solves (all six members stop within 85 here)
    cfg = resolve(min_ratio, "smoke", ["newton_steps=60", "active_set_steps=100"])
    plain = min_ratio.train_and_measure({**cfg, "phase2": "newton-mr"}, TrialContext(CPU))["points"]
    r = min_ratio.train_and_measure({**cfg, "phase2": "active-set"}, TrialContext(CPU))
    pts = r["points"]
    assert sum(p["class"] == "critical point" for p in plain) < len(plain)  # plain Newton-MR stalls on some
    assert all(p["class"] in ("critical point", "kink-critical") and p["clarke_grad_norm"] < 1e-8 for p in pts)
    spec = min_ratio.fast_mlp.spec_of_model("mlp-minratio")
    x = inputs(cfg["points"]).double()
    y = f1(x[:, 0])
    for i, p in enumerate(pts):
        theta = r["end_params"][i : i + 1]
        if p["class"] == "critical point":
            gn, _ = _independent(theta[0], x)  # autograd on the ordinary module
            assert gn < 1e-8
            continue
        # kink-critical: each listed kink sits on its data point, and the one-sided derivatives along its
        # normal (finite differences) enclose 0 after the other units' gradient is accounted for
        assert p["kinks_at_points"]  # (autograd's |grad|, with ReLU'(0) = 0, may be small or not)
        h = spec.widths[1]
        g, s = min_ratio.clarke_grad(theta, spec, x, y)
        assert g.norm() < 1e-8
        for j, k, s_j in p["kinks_at_points"]:
            assert abs(float(theta[0, j] * x[k, 0] + theta[0, h + j])) <= 1e-10 * abs(float(theta[0, j]))
            assert 0.0 <= s_j <= 1.0 and s_j == pytest.approx(float(s[0, j]), abs=1e-12)
            e = torch.zeros_like(theta[0])
            e[h + j] = 1e-6  # moving b_j up turns the pair on (if w_j x_k + b_j rises)
            up = float(_loss(theta[0] + e, spec, x, y) - _loss(theta[0], spec, x, y)) / 1e-6
            down = float(_loss(theta[0] - e, spec, x, y) - _loss(theta[0], spec, x, y)) / 1e-6
            # Clarke-stationary in b_j: the loss rises both ways (a kink minimum) or falls both ways (a kink
            # maximum), up to the second-order term of the differences (~1e-6)
            assert (up >= -1e-5 and down >= -1e-5) or (up <= 1e-5 and down <= 1e-5)


def test_active_set_resumes_in_phase_2(monkeypatch):
    import io

    class StopAfter:  # an in-memory checkpointer that interrupts the trial (as a kill would) at its k-th save
        def __init__(self, k, state=None):
            self.k, self.state, self.saves = k, state, 0

        def load(self):
            return self.state

        def save(self, state, force=False):
            buf = io.BytesIO()
            torch.save(state, buf)
            buf.seek(0)
            self.state = torch.load(buf, weights_only=True)
            self.saves += 1
            if self.saves == self.k:
                raise KeyboardInterrupt

        def progress(self, done, total, info=""):
            pass

    monkeypatch.setattr(min_ratio.fast_mlp, "FULL_BATCH_CHUNK", 100)
    cfg = resolve(min_ratio, "smoke", ["phase1_steps=200", "newton_steps=6", "phase2=active-set"])
    clean = min_ratio.train_and_measure(cfg, TrialContext(CPU, checkpoint=StopAfter(None)))
    ck = StopAfter(4)  # saves at 100, 200 (phase 1), then after each phase-2 iteration: stop after the second
    with pytest.raises(KeyboardInterrupt):
        min_ratio.train_and_measure(cfg, TrialContext(CPU, checkpoint=ck))
    assert ck.state["step"] == 202 and "side" in ck.state["phase2"]
    resumed = min_ratio.train_and_measure(cfg, TrialContext(CPU, checkpoint=StopAfter(None, ck.state)))
    assert json.dumps(resumed["points"]) == json.dumps(clean["points"])
    assert torch.equal(resumed["end_params"], clean["end_params"])
