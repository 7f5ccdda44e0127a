"""min-ratio: the claims give the verdicts they should on synthetic rows, Newton-MR's end points agree
with an independent autograd computation, verdicts recompute from summary.json, diverging runs are
recorded as diverged (also where only the weights explode), and phase 2 resumes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dlscope import findings, models
from dlscope.experiments import min_ratio
from dlscope.experiments._base import TrialContext, resolve
from dlscope.experiments.func_fit import f1, inputs
from dlscope.runner import run_experiment
from dlscope.store import RunStore

CPU = torch.device("cpu")


def _row(seed, loss, grad_norm, ratio, kind="relu", cls=None, n_negative=0):
    cls = cls or ("critical point" if grad_norm < 1e-8 else "not converged")
    return {
        "seed": seed,
        "model_kind": kind,
        "loss": loss,
        "grad_norm": grad_norm,
        "clarke_grad_norm": grad_norm,
        "min_ratio": ratio,
        "min_ratio_nonzero": ratio,
        "index": 0.0,
        "class": cls,
        "n_zero": 100,
        "n_negative": n_negative,
        "dead_units": 20,
        "n_params": 385,
        "diverged": False,
    }


def _verdicts(rows):
    from claims_check import check  # the second route: every number and verdict again from the finding's sample

    out = {f.id: f for f in min_ratio.claims(resolve(min_ratio, "full"), rows)}
    for f in out.values():
        check(f.as_dict())
    return out


def _samples_follow_the_rows(summary: dict, tol: float) -> None:
    """Each finding's sample is what the per-run rows say (counted and paired again here)."""
    rows, f = summary["results"], {x["id"]: x for x in summary["findings"]}
    relu = [r for r in rows if r["model_kind"] == "relu"]
    tanh = [r for r in rows if r["model_kind"] == "tanh"]
    smooth = [r for r in relu if not r["diverged"] and r["grad_norm"] < tol and not r["kinks_at_points"]]
    clarke = [r for r in relu if not r["diverged"] and r["clarke_grad_norm"] < tol]
    assert f["critical-points-reached"]["sample"] == {"k": len(smooth), "n": len(relu), "fraction": 0.9}
    assert f["clarke-critical-points-reached"]["sample"] == {"k": len(clarke), "n": len(relu), "fraction": 0.9}
    assert f["no-smooth-saddles"]["sample"] == {"k": sum(r["n_negative"] > 0 for r in smooth), "n": len(smooth), "fraction": 0.1}
    crit = [r for r in tanh if not r["diverged"] and r["grad_norm"] < tol]
    assert f["smooth-critical-points-reached"]["sample"] == {"k": len(crit), "n": len(tanh), "fraction": 0.9}
    trend = f["ratio-rises-as-loss-falls"]["sample"]
    if len(clarke) >= 4:
        assert trend["x"] == pytest.approx([-r["loss"] for r in clarke]) and trend["y"] == pytest.approx(
            [r["min_ratio"] for r in clarke]
        )


def test_claims_clearly_shown():
    # 100 critical points per model; the lower the loss, the higher the ratio
    rows = [_row(i, 10 ** (-3 - i / 20), 1e-12, 0.3 + i / 400, kind) for kind in ("relu", "tanh") for i in range(100)]
    v = _verdicts(rows)
    for ident in (
        "critical-points-reached",
        "clarke-critical-points-reached",
        "smooth-critical-points-reached",
        "no-smooth-saddles",
    ):
        assert v[ident].verdict == findings.SHOWN and v[ident].n == 100, ident
    for ident in ("ratio-rises-as-loss-falls", "smooth-ratio-rises-as-loss-falls"):
        assert v[ident].verdict == findings.SHOWN and v[ident].value == pytest.approx(1.0) and v[ident].n == 100


def test_claims_clearly_not_shown():
    # no tanh run critical; on the ReLU model half the smooth critical points are saddles and the ratio falls with the loss
    rows = [_row(i, 10 ** (-3 - i / 20), 1e-12, 0.6 - i / 400, n_negative=i % 2) for i in range(100)]
    rows += [_row(i, 1e-3, 1e-3, 0.5, "tanh") for i in range(100)]
    v = _verdicts(rows)
    assert v["smooth-critical-points-reached"].verdict == findings.NOT_SHOWN and v["smooth-critical-points-reached"].value == 0
    assert v["no-smooth-saddles"].verdict == findings.NOT_SHOWN and v["no-smooth-saddles"].value == 0.5
    assert v["ratio-rises-as-loss-falls"].verdict == findings.NOT_SHOWN and v["ratio-rises-as-loss-falls"].value == pytest.approx(
        -1.0
    )
    assert v["smooth-ratio-rises-as-loss-falls"].verdict == findings.INCONCLUSIVE  # no critical point to judge from


def test_claims_undecidable():
    rng = np.random.default_rng(0)
    # 88 of 100 critical: the interval straddles 90%; ratio unrelated to loss
    rows = [
        _row(i, float(rng.uniform(1e-4, 1e-3)), 1e-12 if i < 88 else 1e-4, float(rng.uniform(0.3, 0.4)), "tanh")
        for i in range(100)
    ]
    v = _verdicts(rows)
    f = v["smooth-critical-points-reached"]
    assert f.verdict == findings.INCONCLUSIVE and f.value == 0.88 and f.ci[0] < 0.9 < f.ci[1]
    f = v["smooth-ratio-rises-as-loss-falls"]
    assert f.verdict == findings.INCONCLUSIVE and f.n == 88 and f.ci[0] < 0 < f.ci[1]


def test_the_smooth_trend_needs_80_critical_points():
    # a perfect trend over 79 critical points is still not decided (the n >= 80)
    rows = [_row(i, 10 ** (-3 - i / 20), 1e-12 if i < 79 else 1e-3, 0.3 + i / 400, "tanh") for i in range(100)]
    f = _verdicts(rows)["smooth-ratio-rises-as-loss-falls"]
    assert f.n == 79 and f.value is None and f.verdict == findings.INCONCLUSIVE and "rho 1.00 over them" in f.note


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
    assert [(r["model_kind"], r["seed"]) for r in rows] == [(k, i) for k in ("relu", "tanh") for i in range(6)]
    recorded = {f["id"]: f for f in s["findings"]}
    assert set(recorded) >= {
        "critical-points-reached",
        "clarke-critical-points-reached",
        "no-smooth-saddles",
        "ratio-rises-as-loss-falls",
        "smooth-critical-points-reached",
        "smooth-ratio-rises-as-loss-falls",
    }
    # the tanh premise by hand: k of n below tol, its share
    tanh = [r for r in rows if r["model_kind"] == "tanh"]
    k = sum(r["grad_norm"] < tol for r in tanh)
    assert recorded["smooth-critical-points-reached"]["value"] == pytest.approx(k / len(tanh))
    from claims_check import check_all

    check_all(s)  # every verdict from its sample by a second route
    _samples_follow_the_rows(s, tol)
    # every verdict again through the claim functions, from the JSON rows alone
    cfg = RunStore(tmp_path, "min-ratio").config()
    again = {f.id: f.as_dict() for f in min_ratio.claims(cfg, rows)}
    for ident, f in recorded.items():
        assert again[ident]["verdict"] == f["verdict"] and again[ident]["n"] == f["n"]
    for r in rows:
        assert r["class"] in min_ratio.CLASSES and not r["diverged"]
        if r["model_kind"] == "relu":
            assert (r["class"] == "critical point") == (r["grad_norm"] < tol and not r["kinks_at_points"])
            assert (r["class"] in ("critical point", "kink-critical")) == (r["clarke_grad_norm"] < tol)
            assert r["n_zero"] >= 3 * r["dead_units"]  # a dead unit's three parameters have zero curvature
        else:
            assert (r["class"] == "critical point") == (r["grad_norm"] < tol) and r["n_params"] == 49
        pins = (r["class"] == "kink-critical") * len(r.get("kinks_at_points", []))
        assert r["n_positive"] + r["n_negative"] + r["n_zero"] == r["hessian_dim"] == r["n_params"] - pins
        assert r["index"] == pytest.approx(r["n_negative"] / r["hessian_dim"])
    assert (res.out_dir / "figures" / "min_ratio.png").stat().st_size > 5000


def _assert_diverged_rows_say_so(rows):
    for r in rows:
        numbers = [v for v in r.values() if isinstance(v, float)]
        if not all(math.isfinite(v) for v in numbers):
            assert r["diverged"] and r["class"] == "diverged", r
        if r["diverged"]:
            assert r["min_ratio"] is None and r["index"] is None  # nothing of it enters a claim


@pytest.mark.parametrize("lr", ["1e300", "1e8"])  # NaN weights; finite but exploded weights (issue 21: run all with a huge lr)
def test_a_diverging_run_is_recorded_and_drawn(tmp_path, lr):
    res = run_experiment(
        "min-ratio",
        "smoke",
        out=tmp_path,
        progress=False,
        overrides=[
            f"phase1_lr={lr}",
            f"smooth_phase1_lr={lr}",
            "phase1_steps=20",
            "smooth_phase1_steps=20",
            "active_set_steps=5",
            "smooth_newton_steps=3",
        ],
    )
    assert res.ok
    rows = res.summary["results"]
    assert len(rows) == 12 and all(r["class"] == "diverged" and r["diverged"] for r in rows)
    assert res.summary["classes_relu"]["diverged"] == res.summary["classes_tanh"]["diverged"] == 6
    _assert_diverged_rows_say_so(rows)
    verdicts = {f["id"]: f["verdict"] for f in res.summary["findings"]}
    assert verdicts["clarke-critical-points-reached"] == verdicts["smooth-critical-points-reached"] == "not shown"
    json.loads((res.out_dir / "summary.json").read_text())  # valid JSON (NaN written as null)


def test_adam_phase2_still_runs():
    cfg = resolve(min_ratio, "smoke", ["phase2=adam", "phase1_steps=50", "phase2_steps=20"])
    r = min_ratio.train_and_measure(cfg, TrialContext(CPU))
    for p in r["points"]:
        assert p["grad_norm"] <= p["grad_norm_start"] * (1 + 1e-12) and p["phase2_steps"] <= 20


def test_the_smooth_trial_is_deterministic_and_starts_over_training():
    cfg = resolve(min_ratio, "smoke", ["smooth_newton_steps=5"])
    a = min_ratio.train_and_measure_smooth(cfg, TrialContext(CPU))
    b = min_ratio.train_and_measure_smooth(cfg, TrialContext(CPU))
    assert json.dumps(a["points"]) == json.dumps(b["points"]) and torch.equal(a["end_params"], b["end_params"])
    epochs = [p["start_epoch"] for p in a["points"]]
    assert epochs[0] == cfg["smooth_first_epoch"] and epochs[-1] == cfg["smooth_phase1_steps"] and epochs == sorted(epochs)


def test_the_smooth_trial_s_end_points_are_critical_for_the_l2_objective():
    # the tanh rows: gradient norm and eigenvalue counts of MSE + (smooth_l2/2)|θ|², loss = the MSE part (torch.func here)
    cfg = resolve(min_ratio, "smoke", ["smooth_newton_steps=60"])
    assert cfg["smooth_l2"] == 1e-3
    r = min_ratio.train_and_measure_smooth(cfg, TrialContext(CPU))
    x = inputs(cfg["points"]).double()
    y = f1(x[:, 0])
    model = models.build(cfg["smooth_model"]).double()
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]

    def mse(flat):
        parts = {k: t.reshape(p.shape) for (k, p), t in zip(named, flat.split(sizes))}
        return torch.nn.functional.mse_loss(torch.func.functional_call(model, parts, (x,))[:, 0], y)

    def objective(flat):
        return mse(flat) + 0.5 * cfg["smooth_l2"] * flat.square().sum()

    crit = 0
    for p, theta in zip(r["points"], r["end_params"].double()):
        assert p["loss"] == pytest.approx(mse(theta).item(), rel=1e-10)
        assert p["grad_norm"] == pytest.approx(torch.func.grad(objective)(theta).norm().item(), rel=1e-6, abs=1e-12)
        lam = torch.linalg.eigvalsh(torch.func.hessian(objective)(theta))
        assert p["n_negative"] == int((lam < -cfg["eig_rel_tol"] * lam.abs().max()).sum())
        crit += p["class"] == "critical point"
    assert crit >= 1  # smoke sizes: 2 of 6 after 60 iterations (measured); the counts are checked above either way


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
