"""grad-norm's claim statistics on curves whose answer is known, its claims on synthetic results
(shown, not shown, inconclusive), a real smoke run's verdicts recomputed from its own
summary.json, and a diverging run that still gets a summary, findings and figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dlscope import findings as fnd
from dlscope import models
from dlscope import analysis
from dlscope.engine import fast_mlp
from dlscope.experiments import grad_norm as gn
from dlscope.experiments.func_fit import f1, inputs
from dlscope.runner import run_experiment
from dlscope.store import RunStore


def curves(
    E: int = 100,
    drop_at: int = 40,
    amp_drop: float = 0.5,
    amp_end: float = 0.05,
    level_drop: float = 0.0,
    level_end: float = -1.0,
):
    """A loss that falls 100x over epochs [drop_at, drop_at + 5] and is flat elsewhere; log10 of the
    gradient norm alternates ±amp around its level: |Δ log10 g| = 2 amp between consecutive epochs."""
    e = np.arange(E + 1)
    loss = 10 ** (-2 * np.clip((e - drop_at) / 5, 0, 1))
    amp = np.where(e < E - 30, amp_drop, amp_end)
    level = np.where(e < E - 30, level_drop, level_end)
    return loss.tolist(), (10 ** (level + amp * (-1.0) ** e)).tolist()


def test_windows_of_known_curves():
    loss, g = curves()
    w = gn.windows(loss, g)
    assert w["window"] == 10  # 10% of 100 epochs
    # the largest fall of log10 loss over 10 epochs starts where the whole drop fits: epochs 35..40
    assert 35 <= w["drop_epoch"] <= 40
    assert w["relative_fluctuation_at_drop"] == pytest.approx(1.0) and w["relative_fluctuation_at_end"] == pytest.approx(0.1)
    # in g's units: the alternation between 10^(level ± amp)
    assert w["fluctuation_at_drop"] == pytest.approx(10**0.5 - 10**-0.5)
    assert w["fluctuation_at_end"] == pytest.approx(10**-0.95 - 10**-1.05)
    # medians of log10 g: 0 and -1, each ± an alternating amplitude (an 11-point window: 6 at +amp)
    assert w["median_grad_norm_at_drop"] == pytest.approx(10**0.5) or w["median_grad_norm_at_drop"] == pytest.approx(10**-0.5)
    assert w["median_grad_norm_at_end"] == pytest.approx(10 ** (-1 + 0.05)) or w["median_grad_norm_at_end"] == pytest.approx(
        10 ** (-1 - 0.05)
    )
    assert gn.windows(loss, [*g[:-1], float("nan")]) is None  # diverged
    late = curves(drop_at=94)[0]  # still falling most at the end: no minimum to judge
    assert gn.windows(late, g) is None
    assert gn.windows(loss[:5], g[:5]) is None  # too short for two windows


def rows_of(pairs, model="mlp-mid"):
    """Result rows with the claim's window statistics: pairs = [(fluct_drop, fluct_end)], the
    medians the same."""
    return [
        {
            "model": model,
            "seed": s,
            "fluctuation_at_drop": a,
            "fluctuation_at_end": b,
            "median_grad_norm_at_drop": a,
            "median_grad_norm_at_end": b,
        }
        for s, (a, b) in enumerate(pairs)
    ]


def test_claims_on_synthetic_results():
    shrink = rows_of([(1.0, 0.1), (0.8, 0.1), (1.2, 0.2), (0.9, 0.05)])
    f = gn.claim_fluctuations_shrink(shrink)
    assert f.id == "grad-norm-falls" and f.verdict == fnd.SHOWN and f.n == 4
    vals = [1.0, math.log10(8), math.log10(6), math.log10(18)]
    assert f.value == pytest.approx(np.mean(vals)) and f.test == "paired-t" and f.sample["diffs"] == pytest.approx(vals)
    # a second route: scipy's one-sample t-test on the per-seed numbers
    from scipy import stats

    t = stats.ttest_1samp(vals, 0.0)
    assert f.ci == pytest.approx(tuple(t.confidence_interval(0.95))) and f.p == pytest.approx(t.pvalue / 2)
    assert f.detectable == pytest.approx(stats.t.ppf(0.975, 3) * np.std(vals, ddof=1) / 2)
    assert "smaller at the end in 4 of 4 seeds" in f.note
    # relative: the same statistic of log10 g's changes; no change at all sits on the line, neither side
    rel = [{**r, "relative_fluctuation_at_drop": 0.2, "relative_fluctuation_at_end": 0.2} for r in shrink]
    same = gn.claim_fluctuations_shrink(rel, relative=True)
    assert same.id == "grad-norm-falls-relative" and same.value == 0 and same.ci == [0, 0] and same.verdict == fnd.INCONCLUSIVE
    rel_grow = [{**r, "relative_fluctuation_at_drop": 0.1, "relative_fluctuation_at_end": 0.2 + 0.01 * r["seed"]} for r in shrink]
    assert gn.claim_fluctuations_shrink(rel_grow, relative=True).verdict == fnd.NOT_SHOWN
    grow = rows_of([(0.1, 1.0), (0.1, 0.8), (0.2, 1.2)])
    assert gn.claim_fluctuations_shrink(grow).verdict == fnd.NOT_SHOWN
    assert gn.claim_norm_lower_at_end(grow).verdict == fnd.NOT_SHOWN
    mixed = rows_of([(1.0, 0.1), (0.1, 1.0), (1.0, 0.2), (0.2, 1.0)])
    assert gn.claim_fluctuations_shrink(mixed).verdict == fnd.INCONCLUSIVE
    one = gn.claim_fluctuations_shrink(rows_of([(1.0, 0.1)]))
    assert one.verdict == fnd.INCONCLUSIVE and one.n == 1 and one.ci is None  # one seed: no interval
    assert "one seed only" in one.note
    # 3 seeds that all agree but spread widely: Student-t at n = 3 needs a mean above 2.48 SD
    wide = gn.claim_fluctuations_shrink(rows_of([(1.0, 0.9), (1.0, 0.01), (1.0, 0.5)]))
    assert wide.verdict == fnd.INCONCLUSIVE and "with n = 3" in wide.note and wide.detectable > wide.value
    # the CNN rows make findings of their own; seeds without windows are left out and counted
    cnn = rows_of([(1.0, 0.1), (0.8, 0.1), (0.9, 0.2)], "cnn-1") + [{"model": "cnn-2", "seed": 0, "fluctuation_at_end": None}]
    found = {c.id: c for c in gn.claims(shrink + cnn)}
    assert set(found) == {
        "grad-norm-falls",
        "grad-norm-falls-relative",
        "grad-norm-lower-at-end",
        "grad-norm-falls-cnn",
        "grad-norm-falls-relative-cnn",
        "grad-norm-lower-at-end-cnn",
    }
    assert found["grad-norm-falls-cnn"].n == 3 and "1 seed(s) left out" in found["grad-norm-falls-cnn"].note
    assert found["grad-norm-falls"].n == 4
    # an MLP seed that ends on the constant-prediction plateau reached no minimum: left out
    stalled = shrink + [{**rows_of([(0.1, 1.0)])[0], "seed": 9, "stalled": True}]
    assert gn.claim_fluctuations_shrink(stalled).n == 4


def test_full_batch_grad_norm_is_autograds():
    x = inputs(50)
    y = f1(x[:, 0])
    theta = fast_mlp.init_flat("mlp-mid", [0, 1], dtype=torch.float64)
    loss, norm = fast_mlp.full_batch_grad_norm(theta, fast_mlp.spec_of_model("mlp-mid"), x, y)
    for i in range(2):
        torch.manual_seed(i)
        model = models.build("mlp-mid")
        assert norm[i].item() == pytest.approx(analysis.grad_norm(model, (x, y), "mse"), rel=1e-5)
        with torch.no_grad():
            assert loss[i].item() == pytest.approx(float(torch.nn.functional.mse_loss(model(x)[:, 0], y)), rel=1e-6)


SMOKE = ["models=mlp-mid,cnn-1", "mlp_epochs=12", "seeds=2", "epochs=2"]


def test_smoke_run_verdicts_follow_from_its_own_summary(tmp_path, data_dir):
    res = run_experiment("grad-norm", "smoke", out=tmp_path, data_dir=data_dir, progress=False, overrides=SMOKE)
    assert res.ok
    s = json.loads((tmp_path / "grad-norm" / "summary.json").read_text())
    rows = s["results"]
    assert sorted((r["model"], r["seed"]) for r in rows) == [
        ("cnn-1", 0),
        ("cnn-1", 1),
        ("mlp-mid", 0),
        ("mlp-mid", 1),
        ("mlp-mid", 2),
    ]
    for r in rows:
        assert r["steps"] == (12 * 6 if r["model"] == "mlp-mid" else 2 * 4)  # 60 points / batch 10; 200 images / batch 64
    again = [c.as_dict() for c in gn.claims(rows)]
    assert json.loads(json.dumps(again)) == s["findings"]
    # the headline statistic by hand from the rows
    mlp = [r for r in rows if r["model"] == "mlp-mid" and r.get("fluctuation_at_end")]
    vals = [math.log10(r["fluctuation_at_drop"] / r["fluctuation_at_end"]) for r in mlp]
    head = s["findings"][0]
    assert head["id"] == "grad-norm-falls" and head["n"] == len(vals)
    if vals:
        assert head["value"] == pytest.approx(np.mean(vals)) and head["sample"]["diffs"] == pytest.approx(vals)
    # every finding: its test, p, sample and detectable recorded, and its verdict again from the sample
    # alone (tests/verdict_recheck.py: the t interval by hand), and by scipy's t-test
    from scipy import stats
    from verdict_recheck import recheck

    for f in s["findings"]:
        assert f["test"] == "paired-t" and isinstance(f["sample"], dict) and {"p", "detectable"} <= set(f)
        assert (recheck(f) or fnd.INCONCLUSIVE) == f["verdict"], f["id"]
        d = f["sample"]["diffs"]
        if len(d) >= 2 and np.ptp(d) > 0:
            t = stats.ttest_1samp(d, 0.0)
            assert f["ci"] == pytest.approx(list(t.confidence_interval(0.95))) and f["p"] == pytest.approx(t.pvalue / 2)
    # each row's window statistics from the stored curves
    stored = RunStore(tmp_path, "grad-norm").load_result("mlp-mid")
    for i, r in enumerate(r for r in rows if r["model"] == "mlp-mid"):
        lg = np.log10(stored["grad_norm"][:, i].double().numpy())
        assert r["final_grad_norm"] == pytest.approx(10 ** lg[-1], rel=1e-6)
        if r.get("fluctuation_at_end") is not None:
            W = r["window"]
            g, d = 10**lg, r["drop_epoch"]
            assert r["fluctuation_at_end"] == pytest.approx(np.median(np.abs(np.diff(g[-W - 1 :]))), rel=1e-6)
            assert r["fluctuation_at_drop"] == pytest.approx(np.median(np.abs(np.diff(g[d : d + W + 1]))), rel=1e-6)
            assert r["relative_fluctuation_at_end"] == pytest.approx(np.median(np.abs(np.diff(lg[-W - 1 :]))), rel=1e-6)


def test_a_diverging_run_is_recorded_and_summarised(tmp_path, data_dir):
    res = run_experiment(
        "grad-norm",
        "smoke",
        out=tmp_path,
        data_dir=data_dir,
        progress=False,
        overrides=["models=mlp-mid,cnn-1", "lr=1e3", "mlp_lr=1e3"],
    )
    assert res.ok
    s = json.loads((tmp_path / "grad-norm" / "summary.json").read_text())
    assert any(r["diverged"] for r in s["results"] if r["model"] == "mlp-mid")
    assert {f["id"] for f in s["findings"]} >= {"grad-norm-falls", "grad-norm-falls-cnn"}
    assert all(f["verdict"] in fnd.VERDICTS for f in s["findings"])
    for name in ("grad_norm_mlp.png", "grad_norm_cifar.png"):
        assert (tmp_path / "grad-norm" / "figures" / name).stat().st_size > 5000


def test_profiles_seeds():
    """Issue 18: the MLP at least 6 seeds at quick and 10 at full (shaped as func-fit's ensemble);
    the CNNs 3 at quick, 5 at full."""
    from dlscope.experiments import func_fit
    from dlscope.experiments._base import resolve

    for profile, cnn, mlp in (("quick", 3, 6), ("full", 5, 10)):
        cfg = resolve(gn, profile)
        assert cfg["seeds"] == cnn and cfg["mlp_seeds"] >= mlp
        assert cfg["mlp_seeds"] == 2 * resolve(func_fit, profile)["seeds"]  # one compiled shape for both
