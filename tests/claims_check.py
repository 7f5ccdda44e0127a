"""Recompute the generalization experiments' verdicts from a summary.json alone, by a second route.

Two steps per finding:
  1. the numbers it rests on (its `sample`) are re-derived from the run's own per-seed rows
     (Spearman's rho from numpy ranks, sharpness and barrier from the stored path itself, the
     final window from the rows) and must equal what the finding stored;
  2. its value, interval, p, detectable and verdict are recomputed from that sample without
     findings.py: scipy.stats directly (ttest_1samp(...).confidence_interval(), binomtest(...)
     .proportion_ci(method='exact'), page_trend_test(method='exact')) or by hand (Page's null by
     enumerating every order of one seed, sign flips and pairings by enumeration, Fisher's z).
Every finding must carry test, p, sample, n and detectable."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

ALPHA = 0.025  # one-sided: a two-sided 95% interval clears a line <=> one-sided p <= 2.5%
SHOWN, NOT_SHOWN, INCONCLUSIVE = "shown", "not shown", "inconclusive"
FIELDS = ("id", "claim", "source", "verdict", "statistic", "value", "ci", "n", "note", "test", "p", "sample", "detectable")


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


def by_id(summary: dict) -> dict:
    return {f["id"]: f for f in summary["findings"]}


# --------------------------------------------------------------------------- the second route


def t_ci(a) -> list[float] | None:
    a = np.asarray(a, float)
    if len(a) < 2:
        return None
    if np.all(a == a[0]):
        return [float(a[0])] * 2
    ci = stats.ttest_1samp(a, 0.0).confidence_interval(0.95)
    return [float(ci.low), float(ci.high)]


def t_p(a, margin: float) -> float:
    a = np.asarray(a, float)
    if np.all(a == a[0]):
        return 0.0 if a[0] > margin else 1.0
    t = (a.mean() - margin) / (a.std(ddof=1) / math.sqrt(len(a)))  # by hand
    return float(stats.t.sf(t, len(a) - 1))


def sign_flip_p(d) -> float:
    """All 2^n sign patterns, enumerated."""
    d = np.asarray(d, float)
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    return float(((signs * np.abs(d)).mean(1) >= d.mean() - 1e-12 * max(1.0, abs(d.mean()))).mean())


def cp(k: int, n: int) -> list[float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return [float(ci.low), float(ci.high)]


def page_block_null(k: int) -> np.ndarray:
    """counts[v]: how many of the k! orders of one seed give sum_j j * rank_j = v (enumerated)."""
    w = np.arange(1, k + 1)
    vals = np.array([int(np.dot(w, perm)) for perm in itertools.permutations(range(1, k + 1))])
    return np.bincount(vals).astype(float)


def page_tail(ranks: np.ndarray) -> tuple[float, np.ndarray]:
    """(P(L >= floor(L_obs)), the null's tail P(L >= v) for every v) for ranks [m, k], by the
    m-fold convolution of one seed's enumerated null; k <= 8."""
    m, k = ranks.shape
    block = page_block_null(k)
    dist = np.array([1.0])
    for _ in range(m):
        dist = np.convolve(dist, block / block.sum())
    tail = np.cumsum(dist[::-1])[::-1]
    L = math.floor(float((ranks * np.arange(1, k + 1)).sum()) + 1e-9)
    return float(min(1.0, tail[L])), tail


def page_mc_p(ranks: np.ndarray, reps: int = 20000) -> float:
    """k > 8: Page's p from random within-seed shuffles (tolerance needed)."""
    m, k = ranks.shape
    rng = np.random.default_rng(12345)
    w = np.arange(1, k + 1)
    L = math.floor(float((ranks * w).sum()) + 1e-9)
    null = np.zeros(reps)
    for row in ranks:
        null += (rng.permuted(np.tile(row, (reps, 1)), axis=1) * w).sum(1)
    return float((null >= L).mean())


def _rows_ranks(y: np.ndarray) -> np.ndarray:
    return np.vstack([stats.rankdata(r) for r in y])


def recheck(f: dict) -> dict:
    """value, ci, p, detectable and verdict of finding f, recomputed from f["sample"]; `tol`: how
    far a Monte-Carlo p may differ (0: exact)."""
    test, s = f["test"], f["sample"]
    out = {"tol": 0.0}
    if test.startswith("paired-t"):
        d = np.asarray(s["diffs"], float)
        out["value"] = float(d.mean()) if len(d) else None
        if len(d) < 2:
            return {**out, "ci": None, "p": None, "detectable": None, "verdict": INCONCLUSIVE}
        ci, p = t_ci(d), t_p(d, s["margin"])
        flip_ok = True
        if len(d) >= 6:
            assert test == "paired-t+sign-flip"
            pf = sign_flip_p(d - s["margin"])
            flip_ok, p = pf <= ALPHA, max(p, pf)
        det = s["margin"] + stats.t.ppf(1 - ALPHA, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        verdict = (
            SHOWN
            if ci[0] > s["margin"] and flip_ok
            else NOT_SHOWN
            if ci[1] < s["margin"] + s.get("negligible", 0.0)
            else INCONCLUSIVE
        )
        return {**out, "ci": ci, "p": p, "detectable": det, "verdict": verdict}
    if test == "share-clopper-pearson":
        d = np.asarray(s["diffs"], float)
        if not len(d):
            return {**out, "value": None, "ci": None, "p": None, "detectable": None, "verdict": INCONCLUSIVE}
        k = int((d > s["margin"]).sum())
        ci = cp(k, len(d))
        return {
            **out,
            "value": k / len(d),
            "ci": ci,
            "p": stats.binomtest(k, len(d), 0.5, alternative="greater").pvalue,
            "verdict": SHOWN if ci[0] > 0.5 else NOT_SHOWN if ci[1] < 0.5 else INCONCLUSIVE,
        }
    if test in ("clopper-pearson", "clopper-pearson-at-most"):
        k, n, frac = s["k"], s["n"], s["fraction"]
        if n == 0:
            return {**out, "value": None, "ci": None, "p": None, "detectable": None, "verdict": INCONCLUSIVE}
        ci = cp(k, n)
        if test == "clopper-pearson":
            verdict = SHOWN if ci[0] > frac or (ci[0] >= frac > 0) else NOT_SHOWN if ci[1] < frac else INCONCLUSIVE
        else:
            verdict = SHOWN if ci[1] < frac else NOT_SHOWN if ci[0] > frac else INCONCLUSIVE
        return {**out, "value": k / n, "ci": ci, "verdict": verdict}
    if test == "within-t":
        v = np.asarray(s["values"], float)
        out["value"] = float(v.mean()) if len(v) else None
        if len(v) < 2:
            return {**out, "ci": None, "p": None, "detectable": None, "verdict": INCONCLUSIVE}
        ci = t_ci(v)
        verdict = (
            SHOWN
            if s["low"] <= ci[0] and ci[1] <= s["high"]
            else NOT_SHOWN
            if ci[1] < s["low"] or ci[0] > s["high"]
            else INCONCLUSIVE
        )
        return {**out, "ci": ci, "verdict": verdict}
    if test == "page-L":
        x = np.asarray(s["x"], float)
        y = np.asarray(s["y"], float).reshape(-1, len(x)) if len(s["y"]) else np.zeros((0, len(x)))
        m, k = y.shape
        if m == 0 or k < 3:
            return {**out, "value": None, "ci": None, "p": None, "detectable": None, "verdict": INCONCLUSIVE}
        assert list(x) == sorted(x), "the levels in rising order"
        rhos = np.array([s["sign"] * (rank_rho(x, row) or 0.0) for row in y])
        value = float(rhos.mean())
        ci = None if m < 2 or np.all(rhos == rhos[0]) else [max(t_ci(rhos)[0], -1.0), min(t_ci(rhos)[1], 1.0)]
        ranks = _rows_ranks(s["sign"] * y)
        if k <= 8:
            p, tail = page_tail(ranks)
            p_opp, _ = page_tail(k + 1 - ranks)
            ok = np.nonzero(tail <= ALPHA)[0]
            sum_j2 = k * (k + 1) * (2 * k + 1) / 6
            det = 1 - 12 * (m * sum_j2 - ok[0]) / (m * k * (k * k - 1)) if len(ok) else None
            if m >= 2 and all(len(set(row)) == k for row in y):  # no ties: scipy's exact test agrees
                assert p == pytest.approx(stats.page_trend_test(s["sign"] * y, method="exact").pvalue, rel=1e-9, abs=1e-12)
        else:  # 11 models (param-count full): k! orders are too many to enumerate; no detectable
            p, p_opp, out["tol"] = page_mc_p(ranks), page_mc_p(k + 1 - ranks), 0.01
        if p <= ALPHA and value > s["margin"]:
            verdict = SHOWN
        elif p_opp <= ALPHA or (ci is not None and ci[1] < s["margin"]):
            verdict = NOT_SHOWN
        else:
            verdict = INCONCLUSIVE
        out.update(value=value, ci=ci, p=p, verdict=verdict)
        if k <= 8:
            out["detectable"] = det
        return out
    if test == "spearman-permutation":
        x, y = np.asarray(s["x"], float), np.asarray(s["y"], float)
        n = len(x)
        rho = rank_rho(x, y) if n >= 4 else None
        if rho is None:
            return {**out, "value": None, "ci": None, "p": None, "detectable": None, "verdict": INCONCLUSIVE}
        r = max(min(rho, 0.999999), -0.999999)
        half = stats.norm.ppf(0.975) * math.sqrt((1 + r * r / 2) / (n - 3))  # Bonett & Wright
        ci = [math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)]
        rx, ry = stats.rankdata(x), stats.rankdata(y)
        rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
        if n <= 8:  # every pairing, enumerated
            shuffled = ry[np.array(list(itertools.permutations(range(n))))]
        else:  # 20,000 random pairings: a Monte-Carlo p, within its own error of findings' 9,999
            shuffled = np.random.default_rng(12345).permuted(np.tile(ry, (20000, 1)), axis=1)
            out["tol"] = 0.015
        centred = shuffled - shuffled.mean(1, keepdims=True)
        null = (centred * rx).sum(1) / np.linalg.norm(centred, axis=1)  # Pearson of the ranks
        p = float((null >= rho - 1e-12).mean())
        margin = s["margin"]
        det = math.tanh(math.atanh(max(min(margin, 0.999), -0.999)) + stats.norm.ppf(0.975) / math.sqrt(n - 3))
        verdict = SHOWN if ci[0] > margin and p <= ALPHA else NOT_SHOWN if ci[1] < margin else INCONCLUSIVE
        return {**out, "value": rho, "ci": ci, "p": p, "detectable": det, "verdict": verdict}
    if test == "all-of":
        parts = [recheck({"test": q["test"], "sample": q["sample"]})["verdict"] for q in s["parts"]]
        verdict = (
            INCONCLUSIVE
            if not parts
            else NOT_SHOWN
            if NOT_SHOWN in parts
            else SHOWN
            if all(v == SHOWN for v in parts)
            else INCONCLUSIVE
        )
        return {**out, "verdict": verdict}
    raise AssertionError(f"{f.get('id')}: unknown test {test!r}")


def check(found: dict) -> dict:
    """The finding carries every field, and its numbers and verdict are those of the second route."""
    fid = found["id"]
    for key in FIELDS:
        assert key in found, (fid, key)
    assert found["test"] and isinstance(found["sample"], dict) and found["n"] >= 0, fid
    again = recheck(found)
    tol = again["tol"]
    p = again.get("p")
    if not (tol and p is not None and abs(p - ALPHA) < tol / 3):  # a Monte-Carlo p right at the line: no call
        assert found["verdict"] == again["verdict"], (fid, found["verdict"], again)
    if found["verdict"] != INCONCLUSIVE:
        assert found["p"] is not None or found["test"].startswith(("within", "clopper", "all-of")), fid
    for key in ("value", "ci", "p", "detectable"):
        if key not in again:
            continue  # not recomputed for this test
        want = again[key]
        if want is None:
            assert found[key] is None, (fid, key, found[key])
            continue
        assert found[key] is not None, (fid, key)
        assert found[key] == pytest.approx(want, rel=1e-6, abs=tol if key == "p" and tol else 1e-9), (fid, key, found[key], want)
    return again


def check_all(summary: dict) -> None:
    for f in summary["findings"]:
        check(f)


def same_numbers(a, b) -> None:
    assert len(a) == len(b) and all(x == pytest.approx(y, rel=1e-9, abs=1e-12) for x, y in zip(a, b)), (a, b)


# --------------------------------------------------------------------------- per experiment


def recompute_random_labels(summary: dict) -> None:
    rows, found = summary["results"], by_id(summary)
    check_all(summary)
    from_rows = {
        "memorises": [r["final_train_acc"] for r in rows if _num(r["final_train_acc"])],
        "train-loss-falls": [math.log(10) - r["final_train_loss"] for r in rows if _num(r["final_train_loss"])],
        "test-at-chance": [r["final_test_acc"] for r in rows if _num(r["final_test_acc"])],
        "test-loss-rises": [
            r["final_test_loss"] - r["initial_test_loss"]
            for r in rows
            if _num(r["final_test_loss"]) and _num(r["initial_test_loss"])
        ],
    }
    for fid, values in from_rows.items():
        s = found[fid]["sample"]
        if "diffs" in s:  # a paired/one-sample t (the share form counts wins of these same numbers)
            same_numbers(s["diffs"], values)
        elif "values" in s:
            same_numbers(s["values"], values)


def interpolation_diffs(rows: list[dict], pair: str, measure) -> list[float]:
    diffs = []
    for r in (r for r in rows if r["pair"] == pair):
        rise = measure(r)
        if rise is None:
            continue
        a_larger = r["a"] > r["b"]
        rise_larger, rise_smaller = (rise[0], rise[1]) if a_larger else (rise[1], rise[0])
        # batch: the larger batch is claimed sharper; lr: the smaller lr is claimed sharper
        diffs.append(rise_larger - rise_smaller if pair == "batch" else rise_smaller - rise_larger)
    return diffs


def recompute_interpolation(summary: dict, delta: float) -> None:
    rows, found = summary["results"], by_id(summary)
    check_all(summary)

    def loss_at(r, alpha):
        i = min(range(len(r["alpha"])), key=lambda j: abs(r["alpha"][j] - alpha))
        assert abs(r["alpha"][i] - alpha) < 1e-9
        return r["train_loss"][i]

    def rises(r):
        if any(r["diverged"]):
            return None
        pts = [loss_at(r, a) for a in (-delta, 0.0, 1.0, 1 + delta)]
        if not all(_num(v) for v in pts):
            return None
        return pts[0] - pts[1], pts[3] - pts[2]  # outward from a, outward from b

    def keskar(r):  # each end's Keskar sharpness, as stored in the row
        return None if not (_num(r.get("a_keskar")) and _num(r.get("b_keskar"))) else (r["a_keskar"], r["b_keskar"])

    for pair, fid, measure in (
        ("batch", "large-batch-sharper", keskar),
        ("lr", "large-lr-flatter", keskar),
        ("batch", "large-batch-line-sharper", rises),
        ("lr", "large-lr-line-flatter", rises),
    ):
        assert found[fid]["test"].startswith("paired-t"), fid
        same_numbers(found[fid]["sample"]["diffs"], interpolation_diffs(rows, pair, measure))
    bars = []
    for r in (r for r in rows if r["pair"] == "batch"):
        acc = dict(zip(r["alpha"], r["test_acc"]))
        inner = [v for a, v in acc.items() if 0 < a < 1]
        if not any(r["diverged"]) and all(_num(v) for v in [acc[0.0], acc[1.0], *inner]) and inner:
            bars.append(min(acc[0.0], acc[1.0]) - min(inner))
    assert found["barrier"]["test"].startswith("paired-t")
    same_numbers(found["barrier"]["sample"]["diffs"], bars)


def sweep_matrix(rows: list[dict], sweep: str, xkey: str, ykey: str) -> tuple[list, list[list[float]]]:
    """The swept x and, per seed with every configuration measured, y at each x."""
    pts = [r for r in rows if r["sweep"] == sweep]
    xs = sorted({r[xkey] for r in pts})
    per_seed = []
    for seed in sorted({r["seed"] for r in pts}):
        ys = {r[xkey]: r.get(ykey) for r in pts if r["seed"] == seed}
        if all(_num(ys.get(x)) for x in xs):
            per_seed.append([ys[x] for x in xs])
    return xs, per_seed


def recompute_sensitivity(summary: dict) -> None:
    rows, found = summary["results"], by_id(summary)
    check_all(summary)
    for fid, sweep, xkey, ykey, sign in (
        ("sensitivity-falls-with-batch", "batch", "batch_size", "sensitivity", -1),
        ("sensitivity-falls-with-lr", "lr", "lr", "sensitivity", -1),
        ("accuracy-falls-with-batch", "batch", "batch_size", "test_acc", -1),
        ("sharpness-rises-with-batch", "batch", "batch_size", "keskar", +1),
    ):
        f = found[fid]
        xs, ys = sweep_matrix(rows, sweep, xkey, ykey)
        assert f["test"] == "page-L" and f["sample"]["sign"] == sign, fid
        assert f["n"] == (len(ys) if len(xs) >= 3 else 0), fid
        if len(xs) >= 3 and ys:
            same_numbers(f["sample"]["x"], xs)
            for got, want in zip(f["sample"]["y"], ys, strict=True):
                same_numbers(got, want)
            # the effect size by hand: the mean of the per-seed Spearman rho
            assert f["value"] == pytest.approx(np.mean([sign * (rank_rho(xs, y) or 0.0) for y in ys]), abs=1e-12)
    ok = [r for r in rows if not r["diverged"] and _num(r["sensitivity"]) and _num(r["acc_gap"])]
    f = found["sensitivity-tracks-gap"]
    assert f["test"] == "spearman-permutation" and f["n"] == len(ok)
    same_numbers(f["sample"]["x"], [r["sensitivity"] for r in ok])
    same_numbers(f["sample"]["y"], [r["train_acc"] - r["test_acc"] for r in ok])


def recompute_param_count(summary: dict) -> None:
    """Each trend from the rows: the seeds with >= 3 models with a result, over the models common
    to all of them, y per seed in parameter order."""
    rows, found = summary["results"], by_id(summary)
    check_all(summary)
    for fid, key, sign in (
        ("more-params-better", "test_acc", 1),
        ("more-params-lower-loss", "test_loss", -1),
        ("gap-grows-with-params", "gap", 1),
    ):
        f = found[fid]
        assert f["test"] == "page-L" and f["sample"]["sign"] == sign, fid
        per_seed: dict = {}
        for r in rows:
            if _num(r.get(key)):
                per_seed.setdefault(r["seed"], {})[r["params"]] = r[key]
        used = [pts for _, pts in sorted(per_seed.items()) if len(pts) >= 3]
        common = sorted(set.intersection(*(set(p) for p in used))) if used else []
        assert f["n"] == len(used), fid
        same_numbers(f["sample"]["x"], common)
        if len(common) >= 3:
            for got, pts in zip(f["sample"]["y"], used, strict=True):
                same_numbers(got, [pts[x] for x in common])
