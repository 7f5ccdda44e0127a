"""Recompute the generalization experiments' verdicts from a summary.json's own per-seed rows.

The numbers each claim rests on are re-derived here from the rows by a second route (Spearman's
rho from numpy ranks, sharpness and barrier from the stored path itself, the final window from
the rows), then passed through the same seeded verdict rules of findings.py; value, interval and
verdict must equal what the run wrote."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlscope import findings


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def rank_rho(x, y) -> float | None:
    """Spearman's rho: Pearson's r of the ranks (tied values share their average rank); None if
    either side is constant."""
    def ranks(v):
        v = np.asarray(v, float)
        return np.array([(v < t).sum() + ((v == t).sum() - 1) / 2 for t in v])

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def check(found: dict, value, ci, verdict, n) -> None:
    assert found["n"] == n, found["id"]
    assert found["verdict"] == verdict, found["id"]
    if value is None:
        assert found["value"] is None
    else:
        assert found["value"] == pytest.approx(value, rel=1e-9, abs=1e-12), found["id"]
    if ci is None:
        assert found["ci"] is None
    else:
        assert found["ci"] == pytest.approx(ci, rel=1e-9, abs=1e-12), found["id"]


def by_id(summary: dict) -> dict:
    return {f["id"]: f for f in summary["findings"]}


def recompute_random_labels(summary: dict) -> None:
    rows, found = summary["results"], by_id(summary)
    acc = [r["final_train_acc"] for r in rows if _num(r["final_train_acc"])]
    check(found["memorises"], *findings.greater(acc, margin=0.9))
    fall = [math.log(10) - r["final_train_loss"] for r in rows if _num(r["final_train_loss"])]
    check(found["train-loss-falls"], *findings.greater(fall, margin=0.5))
    check(found["test-at-chance"], *findings.within([r["final_test_acc"] for r in rows if _num(r["final_test_acc"])], 0.07, 0.13))
    rise = [r["final_test_loss"] - r["initial_test_loss"] for r in rows if _num(r["final_test_loss"]) and _num(r["initial_test_loss"])]
    check(found["test-loss-rises"], *findings.greater(rise))


def recompute_interpolation(summary: dict, delta: float) -> None:
    rows, found = summary["results"], by_id(summary)

    def loss_at(r, alpha):
        i = min(range(len(r["alpha"])), key=lambda j: abs(r["alpha"][j] - alpha))
        assert abs(r["alpha"][i] - alpha) < 1e-9
        return r["train_loss"][i]

    def rises(r):
        pts = [loss_at(r, a) for a in (-delta, 0.0, 1.0, 1 + delta)]
        if not all(_num(v) for v in pts):
            return None
        return pts[0] - pts[1], pts[3] - pts[2]  # outward from a, outward from b

    def keskar(r):  # each end's Keskar sharpness, as stored in the row
        return None if not (_num(r.get("a_keskar")) and _num(r.get("b_keskar"))) else (r["a_keskar"], r["b_keskar"])

    for pair, fid, measure in (("batch", "large-batch-sharper", keskar), ("lr", "large-lr-flatter", keskar),
                               ("batch", "large-batch-line-sharper", rises), ("lr", "large-lr-line-flatter", rises)):
        diffs = []
        for r in (r for r in rows if r["pair"] == pair):
            rise = measure(r)
            if rise is None:
                continue
            a_larger = r["a"] > r["b"]
            rise_larger, rise_smaller = (rise[0], rise[1]) if a_larger else (rise[1], rise[0])
            # batch: the larger batch is claimed sharper; lr: the smaller lr is claimed sharper
            diffs.append(rise_larger - rise_smaller if pair == "batch" else rise_smaller - rise_larger)
        check(found[fid], *findings.greater(diffs))
    bars = []
    for r in (r for r in rows if r["pair"] == "batch"):
        acc = dict(zip(r["alpha"], r["test_acc"]))
        inner = [v for a, v in acc.items() if 0 < a < 1]
        if all(_num(v) for v in [acc[0.0], acc[1.0], *inner]) and inner:
            bars.append(min(acc[0.0], acc[1.0]) - min(inner))
    check(found["barrier"], *findings.greater(bars))


def recompute_sensitivity(summary: dict) -> None:
    rows, found = summary["results"], by_id(summary)
    for fid, sweep, xkey, ykey, sign in (("sensitivity-falls-with-batch", "batch", "batch_size", "sensitivity", -1),
                                         ("sensitivity-falls-with-lr", "lr", "lr", "sensitivity", -1),
                                         ("accuracy-falls-with-batch", "batch", "batch_size", "test_acc", -1),
                                         ("sharpness-rises-with-batch", "batch", "batch_size", "keskar", +1)):
        pts = [r for r in rows if r["sweep"] == sweep]
        xs = sorted({r[xkey] for r in pts})
        rhos = []
        for seed in sorted({r["seed"] for r in pts}):
            ys = {r[xkey]: r.get(ykey) for r in pts if r["seed"] == seed}
            if all(_num(ys.get(x)) for x in xs) and len(xs) >= 3:
                rho = rank_rho(xs, [ys[x] for x in xs])
                if rho is not None:  # a constant seed has no rho
                    rhos.append(sign * rho)
        if len(rhos) >= 2 or not rhos:
            check(found[fid], *findings.greater(rhos))
        else:  # one seed: judged by a permutation band instead
            assert found[fid]["n"] == 1 and found[fid]["value"] == pytest.approx(rhos[0])
    ok = [r for r in rows if _num(r["sensitivity"]) and _num(r["acc_gap"])]
    rho, ci, verdict, n = findings.correlation([r["sensitivity"] for r in ok], [r["train_acc"] - r["test_acc"] for r in ok])
    check(found["sensitivity-tracks-gap"], rho, ci, verdict, n)
