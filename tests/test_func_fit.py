"""func-fit's claims, its "stalled" rule and its convergence epoch: each against numbers whose
answer is known (synthetic results, closed forms), and a real smoke run's verdicts recomputed
from its own summary.json."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch

from dlscope import findings as fnd
from dlscope.engine import fast_mlp
from dlscope.experiments import func_fit as ff
from dlscope.runner import run_experiment

MODELS = ["mlp-deep", "mlp-mid", "mlp-shallow"]


def python_targets(function: str, points: int) -> list[float]:
    """The targets with Python's math on the same inputs (float64), without torch."""
    xs = [float(v) for v in ff.inputs(points)[:, 0].double()]
    if function == "f1":
        return [1.0 if x == 0 else math.sin(5 * math.pi * x) / (5 * math.pi * x) for x in xs]
    return [float(np.sign(math.sin(5 * math.pi * x))) for x in xs]


@pytest.mark.parametrize("function", ["f1", "f2"])
def test_constant_mse_is_the_targets_variance_and_a_constant_network_stalls(function):
    c = ff.constant_mse(function, 300)
    assert c == pytest.approx(statistics.pvariance(python_targets(function, 300)), rel=1e-12)
    if function == "f1":
        assert c == pytest.approx(0.0869, abs=5e-5)  # the plateau the issue measured
    # a network that outputs the targets' mean everywhere (every weight 0, last bias = the mean)
    # has exactly that MSE, and the rule calls it stalled; one 2% below the plateau is not stalled
    spec = fast_mlp.spec_of_model("mlp-deep")
    theta = torch.zeros(1, spec.n_params, dtype=torch.float64)
    theta[0, -1] = statistics.fmean(python_targets(function, 300))
    x = ff.inputs(300).double()
    mse = float((fast_mlp.forward(theta, spec, x)[0, :, 0] - ff.FUNCTIONS[function](x[:, 0])).square().mean())
    assert mse == pytest.approx(c, rel=1e-12)
    assert ff.is_stalled(mse, c) and not ff.is_fit(mse, c)
    assert ff.is_stalled(0.995 * c, c) and ff.is_stalled(1.005 * c, c)
    assert not ff.is_stalled(0.98 * c, c) and not ff.is_stalled(1e30, c)  # a blow-up is no plateau
    assert ff.is_fit(0.1 * c, c) and not ff.is_fit(0.11 * c, c)
    assert not ff.is_stalled(float("nan"), c) and not ff.is_fit(None, c)


def test_descent_epoch_of_a_known_curve():
    # log10 loss falls linearly from 0 to -4 over 1000 epochs, then stays: 90% of the descent
    # (down to 10^-3.6) is done at epoch 900
    loss = [10 ** (-4 * min(e, 1000) / 1000) for e in range(2001)]
    assert ff.descent_epoch(loss) == 900
    assert ff.descent_epoch([1.0, 2.0, 3.0]) == 0  # never fell below its start
    assert ff.descent_epoch([1.0, float("nan"), 0.5]) is None  # diverged
    # the end level is the lowest of the last 10%, not the noisy last value
    noisy = loss[:1800] + [1e-4 * (1 + (e % 2)) for e in range(1800, 2001)]
    assert ff.descent_epoch(noisy) == 900


# --------------------------------------------------------------------------- claims on synthetic rows


def rows_from(finals: dict, epoch_90: dict | None = None, epochs: int = 5000) -> list[dict]:
    """Result rows from {(function, model): [final MSE per seed]}."""
    out = []
    for (f, m), values in finals.items():
        for s, v in enumerate(values):
            e90 = (epoch_90 or {}).get((f, m), [None] * len(values))[s]
            out.append(
                {
                    "function": f,
                    "model": m,
                    "seed": s,
                    "final_loss": v,
                    "constant_mse": ff.constant_mse(f, 300),
                    "epoch_90": e90,
                    "epochs": epochs,
                }
            )
    return out


C1, C2 = ff.constant_mse("f1", 300), ff.constant_mse("f2", 300)


def cp_interval(k: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson from the beta quantiles: a second route to findings.at_least's interval."""
    from scipy import stats

    return (0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1), 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k))


def test_f1_all_fit_verdicts():
    fits = [0.002, 0.003, 0.001, 0.004, 0.002, 0.003, 0.002, 0.001]
    shown = ff.claim_f1_all_fit(rows_from({("f1", m): fits for m in MODELS}), MODELS)
    assert shown.verdict == fnd.SHOWN and shown.value == 1.0 and shown.n == 8
    assert shown.test == "all-of" and [p["label"] for p in shown.sample["parts"]] == MODELS
    assert shown.ci == pytest.approx(cp_interval(8, 8)) and shown.ci[0] > 0.5 and shown.p == pytest.approx(0.5**8)
    assert shown.detectable == 1.0  # with 8 seeds only 8 of 8 shows a majority
    # mlp-deep stalls in 9 of 10 seeds: the exact interval of 1/10 lies below 1/2
    stuck = {("f1", "mlp-deep"): [C1] * 9 + [0.002], **{("f1", m): fits for m in MODELS[1:]}}
    not_shown = ff.claim_f1_all_fit(rows_from(stuck), MODELS)
    assert not_shown.verdict == fnd.NOT_SHOWN and not_shown.value == 1 / 10 and not_shown.n == 10
    assert not_shown.ci[1] == pytest.approx(cp_interval(1, 10)[1]) and not_shown.ci[1] < 0.5
    assert "mlp-deep fit 1/10, stalled 9/10" in not_shown.note
    # 1 of 8 fits: [0.003, 0.53] reaches 1/2, so 8 seeds cannot say it fails (the exact interval, not Wilson's)
    one = {("f1", "mlp-deep"): [C1] * 7 + [0.002], **{("f1", m): fits for m in MODELS[1:]}}
    assert ff.claim_f1_all_fit(rows_from(one), MODELS).verdict == fnd.INCONCLUSIVE
    # 7 of 8: [0.47, 1.00] reaches 1/2 too; the note says what 8 seeds could show
    seven = {("f1", "mlp-deep"): [C1] + fits[1:], **{("f1", m): fits for m in MODELS[1:]}}
    f = ff.claim_f1_all_fit(rows_from(seven), MODELS)
    assert f.verdict == fnd.INCONCLUSIVE and f.value == 7 / 8 and "mlp-deep: with n = 8" in f.note
    # 4 of 8: the seeds cannot decide
    half = {("f1", "mlp-deep"): [C1] * 4 + [0.002] * 4, **{("f1", m): fits for m in MODELS[1:]}}
    assert ff.claim_f1_all_fit(rows_from(half), MODELS).verdict == fnd.INCONCLUSIVE
    # a diverged seed does not fit
    nan = {("f1", "mlp-deep"): [float("nan")] * 8, **{("f1", m): fits for m in MODELS[1:]}}
    assert ff.claim_f1_all_fit(rows_from(nan), MODELS).verdict == fnd.NOT_SHOWN
    # a model that did not run leaves the claim undecided, however well the others fit
    two = ff.claim_f1_all_fit(rows_from({("f1", m): fits for m in MODELS[1:]}), MODELS)
    assert two.verdict == fnd.INCONCLUSIVE and "mlp-deep did not run" in two.note
    none = ff.claim_f1_all_fit([], MODELS)
    assert none.verdict == fnd.INCONCLUSIVE and none.n == 0 and none.test == "all-of" and none.sample == {"parts": []}


def test_f2_shallow_worst_verdicts():
    g = np.random.default_rng(0)
    deep = list(0.05 * np.exp(g.normal(0, 0.1, 8)))
    shown = ff.claim_f2_shallow_worst(
        rows_from({("f2", "mlp-deep"): deep, ("f2", "mlp-mid"): deep, ("f2", "mlp-shallow"): [0.35] * 8}), MODELS
    )
    assert shown.verdict == fnd.SHOWN and shown.n == 8 and shown.test == "share-clopper-pearson"
    # the statistic by hand: per seed log10(shallow / the larger deeper MSE), above log10(2) in every seed
    assert shown.sample["diffs"] == pytest.approx([math.log10(0.35 / d) for d in deep])
    assert shown.sample["margin"] == pytest.approx(math.log10(2))
    assert shown.value == 1.0 and shown.ci == pytest.approx(cp_interval(8, 8)) and shown.p == pytest.approx(0.5**8)
    assert "at least 2x above in 8 of 8 seeds" in shown.note
    same = ff.claim_f2_shallow_worst(rows_from({("f2", m): deep for m in MODELS}), MODELS)
    assert same.verdict == fnd.NOT_SHOWN and same.value == 0.0  # equal MSEs: 0 of 8, [0, 0.37] below 1/2
    # bimodal: mlp-shallow far above in half the seeds, far below in the others
    mixed = ff.claim_f2_shallow_worst(
        rows_from({("f2", "mlp-deep"): deep, ("f2", "mlp-mid"): deep, ("f2", "mlp-shallow"): [0.5, 0.01] * 4}), MODELS
    )
    assert mixed.verdict == fnd.INCONCLUSIVE and mixed.value == 0.5
    # 7 of 8 is not enough with 8 seeds; 9 of 10 is
    deep10 = list(0.05 * np.exp(g.normal(0, 0.1, 10)))
    for share, n, verdict in ((7, 8, fnd.INCONCLUSIVE), (9, 10, fnd.SHOWN)):
        sh = [0.35] * share + [0.05] * (n - share)
        f = ff.claim_f2_shallow_worst(
            rows_from({("f2", "mlp-deep"): deep10[:n], ("f2", "mlp-mid"): deep10[:n], ("f2", "mlp-shallow"): sh}), MODELS
        )
        assert f.verdict == verdict and f.value == share / n, (share, n)
    missing = ff.claim_f2_shallow_worst(rows_from({("f2", "mlp-deep"): deep}), MODELS)
    assert missing.verdict == fnd.INCONCLUSIVE and missing.n == 0


def test_f1_faster_than_f2_verdicts():
    finals = {(f, m): [0.01] * 4 for f in ("f1", "f2") for m in MODELS}
    fast1 = {**{("f1", m): [500, 600, 550, 520] for m in MODELS}, **{("f2", m): [3000, 2500, 4000, 2800] for m in MODELS}}
    shown = ff.claim_f1_faster(rows_from(finals, fast1), MODELS)
    # every model faster on f1 in each of its 4 seeds: all of the three paired t-tests shown
    diffs = [(b - a) / 5000 for a, b in zip([500, 600, 550, 520], [3000, 2500, 4000, 2800])]
    assert shown.verdict == fnd.SHOWN and shown.n == 4 and shown.test == "all-of"
    assert [p["label"] for p in shown.sample["parts"]] == MODELS
    assert all(p["test"] == "paired-t" and p["sample"]["diffs"] == pytest.approx(diffs) for p in shown.sample["parts"])
    assert shown.value == pytest.approx(np.mean(diffs))
    from scipy import stats

    t = stats.ttest_1samp(diffs, 0.0)  # a second route: scipy's t-test on the same differences
    assert shown.ci == pytest.approx(tuple(t.confidence_interval(0.95))) and shown.p == pytest.approx(t.pvalue / 2)
    reverse = {("f1", m): v for (f, m), v in fast1.items() if f == "f2"} | {
        ("f2", m): v for (f, m), v in fast1.items() if f == "f1"
    }
    assert ff.claim_f1_faster(rows_from(finals, reverse), MODELS).verdict == fnd.NOT_SHOWN
    mixed = {**{("f1", m): [500, 3000, 500, 3000] for m in MODELS}, **{("f2", m): [3000, 500, 3000, 500] for m in MODELS}}
    assert ff.claim_f1_faster(rows_from(finals, mixed), MODELS).verdict == fnd.INCONCLUSIVE
    # a seed stalled on either function is left out; a model with no seed left cannot be judged,
    # so neither can "all models"
    stalled = {**finals, ("f2", "mlp-deep"): [C2] * 4}
    f = ff.claim_f1_faster(rows_from(stalled, fast1), MODELS)
    assert f.verdict == fnd.INCONCLUSIVE and [len(p["sample"]["diffs"]) for p in f.sample["parts"]] == [0, 4, 4]
    assert "4 (model, seed) pairs left out as stalled" in f.note and "mlp-deep: no pair" in f.note
    # one model slower on f1 in every seed: not shown, whatever the others do
    slow = {**fast1, ("f1", "mlp-mid"): [3000, 2500, 4000, 2800], ("f2", "mlp-mid"): [500, 600, 550, 520]}
    assert ff.claim_f1_faster(rows_from(finals, slow), MODELS).verdict == fnd.NOT_SHOWN


# --------------------------------------------------------------------------- real runs


def test_smoke_run_verdicts_follow_from_its_own_summary(tmp_path):
    res = run_experiment("func-fit", "smoke", out=tmp_path, progress=False, overrides=["seeds=3"])
    assert res.ok
    s = json.loads((tmp_path / "func-fit" / "summary.json").read_text())
    rows = s["results"]
    assert len(rows) == 2 * 3 * 3 and {r["seed"] for r in rows} == {0, 1, 2}
    for r in rows:  # the flags follow from the row's numbers and an independent variance
        c = statistics.pvariance(python_targets(r["function"], 60))
        assert r["constant_mse"] == pytest.approx(c, rel=1e-12)
        assert r["stalled"] == (abs(r["final_loss"] / c - 1) <= 0.01) and r["fit"] == (r["final_loss"] <= 0.1 * c)
        assert r["steps"] == 12 * 15 and r["epochs"] == 12
    assert [f["id"] for f in s["findings"]] == ["f1-all-fit", "f2-shallow-worst", "f1-faster-than-f2"]
    again = [c.as_dict() for c in ff.claims(rows, ff.PROFILES["smoke"]["models"])]
    assert json.loads(json.dumps(again)) == s["findings"]
    # f2-shallow-worst by hand from the rows
    f2 = {(r["model"], r["seed"]): r["final_loss"] for r in rows if r["function"] == "f2"}
    d = [math.log10(f2["mlp-shallow", k] / max(f2["mlp-deep", k], f2["mlp-mid", k])) for k in range(3)]
    got = next(f for f in s["findings"] if f["id"] == "f2-shallow-worst")
    wins = sum(x > math.log10(2) for x in d)
    assert got["test"] == "share-clopper-pearson" and got["sample"]["diffs"] == pytest.approx(d)
    assert got["value"] == pytest.approx(wins / 3) and got["ci"] == pytest.approx(cp_interval(wins, 3))
    # with 3 seeds no share can decide: 3 of 3 gives [0.29, 1], 0 of 3 [0, 0.71]
    assert got["verdict"] == fnd.INCONCLUSIVE and got["detectable"] is None and "with n = 3" in got["note"]
    # every finding carries its test, p, sample and detectable, and its verdict follows from its sample alone
    from verdict_recheck import recheck

    for f in s["findings"]:
        assert {"test", "p", "sample", "detectable"} <= set(f) and f["test"] and isinstance(f["sample"], dict)
        assert (recheck(f) or fnd.INCONCLUSIVE) == f["verdict"], f["id"]
    # by_model's median is numpy's
    for b in s["by_model"]:
        vals = [r["final_loss"] for r in rows if (r["function"], r["model"]) == (b["function"], b["model"])]
        assert b["median_final_loss"] == pytest.approx(float(np.median(vals)))
        assert (
            b["stalled"]
            == f"{sum(r['stalled'] for r in rows if (r['function'], r['model']) == (b['function'], b['model']))} of 3"
        )


def test_a_diverging_run_is_recorded_and_summarised(tmp_path):
    res = run_experiment("func-fit", "smoke", out=tmp_path, progress=False, overrides=["lr=1e3", "models=mlp-deep,mlp-shallow"])
    assert res.ok
    s = json.loads((tmp_path / "func-fit" / "summary.json").read_text())
    diverged = [r for r in s["results"] if r["diverged"]]
    assert diverged  # mlp-deep's loss overflows to NaN at this rate
    for r in diverged:  # recorded as such: no loss, neither fit nor stalled, no convergence epoch
        assert r["final_loss"] is None and not r["fit"] and not r["stalled"] and r["epoch_90"] is None
    for r in s["results"]:  # the others blew up to huge finite losses: no plateau, no fit
        assert not r["stalled"] and not r["fit"]
    assert any(b["diverged"] and b["median_final_loss"] is None for b in s["by_model"])
    assert {f["id"] for f in s["findings"]} == {"f1-all-fit", "f2-shallow-worst", "f1-faster-than-f2"}
    assert all(f["verdict"] in fnd.VERDICTS for f in s["findings"])
    for name in ("functions.png", "loss.png", "convergence.png", "predictions.png"):
        assert (tmp_path / "func-fit" / "figures" / name).stat().st_size > 5000
