"""A second route to every verdict: recompute a finding's verdict from its own `sample` (as stored
in summary.json) without findings.py, by textbook formulas and brute-force enumeration.

Used by the tests on real runs (smoke) and by `python tests/verdict_recheck.py RUN_DIR` on any run
folder (a quick or full study), which prints every finding whose verdict the second route does
not reproduce."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

ALPHA = 0.025  # one-sided
SHOWN, NOT_SHOWN, INCONCLUSIVE = "shown", "not shown", "inconclusive"


def t_ci(a):
    a = np.asarray(a, float)
    n = len(a)
    m, s = a.mean(), a.std(ddof=1)
    half = stats.t.ppf(1 - ALPHA, n - 1) * s / math.sqrt(n)  # by hand: mean ± t * s / sqrt(n)
    return m - half, m + half


def sign_flip_p(d):
    """All 2^n sign patterns, enumerated."""
    d = np.asarray(d, float)
    obs = d.mean()
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    return float(((signs * np.abs(d)).mean(1) >= obs - 1e-12 * max(1.0, abs(obs))).mean())


def cp(k, n):
    """Clopper-Pearson from the beta quantiles."""
    lo = 0.0 if k == 0 else stats.beta.ppf(ALPHA, k, n - k + 1)
    hi = 1.0 if k == n else stats.beta.ppf(1 - ALPHA, k + 1, n - k)
    return lo, hi


def page_p(y):
    """One-sided p of Page's L for rising y: scipy's exact test for 2+ seeds and up to 8 levels;
    one seed: all k! orders enumerated; otherwise 20,000 random within-seed shuffles."""
    y = np.asarray(y, float)
    m, k = y.shape
    if m >= 2 and k <= 8:
        return float(stats.page_trend_test(y, method="exact").pvalue)
    ranks = np.vstack([stats.rankdata(r) for r in y])
    weights = np.arange(1, k + 1)
    L = (ranks * weights).sum()
    if m == 1 and k <= 8:
        Ls = np.array([np.dot(weights, perm) for perm in itertools.permutations(range(1, k + 1))])
        return float((Ls >= math.floor(L + 1e-9)).mean())
    rng = np.random.default_rng(1)
    Ls = np.zeros(20000)
    for row in ranks:
        Ls += (rng.permuted(np.tile(row, (20000, 1)), axis=1) * weights).sum(1)
    return float((Ls >= math.floor(L + 1e-9)).mean())


def recheck(f: dict) -> str | None:
    """The verdict of finding `f` recomputed from f["sample"]; None when the sample holds too little
    to decide anything (then the verdict must be inconclusive)."""
    return _verdict(f["test"], f["sample"])


def _verdict(test: str, s: dict) -> str | None:
    if test.startswith("paired-t"):
        d = np.asarray(s["diffs"], float)
        if len(d) < 2:
            return None
        lo, hi = (d[0], d[0]) if np.all(d == d[0]) else t_ci(d)
        flip_ok = len(d) < 6 or sign_flip_p(d - s["margin"]) <= ALPHA
        if lo > s["margin"] and flip_ok:
            return SHOWN
        return NOT_SHOWN if hi < s["margin"] + s.get("negligible", 0.0) else INCONCLUSIVE
    if test == "share-clopper-pearson":
        d = np.asarray(s["diffs"], float)
        if not len(d):
            return None
        lo, hi = cp(int((d > s["margin"]).sum()), len(d))
        return SHOWN if lo > 0.5 else NOT_SHOWN if hi < 0.5 else INCONCLUSIVE
    if test == "clopper-pearson":
        if s["n"] == 0:
            return None
        lo, hi = cp(s["k"], s["n"])
        return SHOWN if lo > s["fraction"] or (lo >= s["fraction"] > 0) else NOT_SHOWN if hi < s["fraction"] else INCONCLUSIVE
    if test == "clopper-pearson-at-most":
        if s["n"] == 0:
            return None
        lo, hi = cp(s["k"], s["n"])
        return SHOWN if hi < s["fraction"] else NOT_SHOWN if lo > s["fraction"] else INCONCLUSIVE
    if test == "within-t":
        v = np.asarray(s["values"], float)
        if len(v) < 2:
            return None
        lo, hi = (v[0], v[0]) if np.all(v == v[0]) else t_ci(v)
        if s["low"] <= lo and hi <= s["high"]:
            return SHOWN
        return NOT_SHOWN if hi < s["low"] or lo > s["high"] else INCONCLUSIVE
    if test == "page-L":
        y = s["sign"] * np.asarray(s["y"], float)
        if y.size == 0 or y.shape[1] < 3:
            return None
        x = np.asarray(s["x"], float)
        rhos = [stats.spearmanr(x, row).statistic if np.ptp(row) > 0 else 0.0 for row in y]
        mean_rho = float(np.mean(rhos))
        if page_p(y) <= ALPHA and mean_rho > s["margin"]:
            return SHOWN
        if page_p(-y) <= ALPHA:
            return NOT_SHOWN
        if len(rhos) >= 2 and np.ptp(rhos) > 0 and min(t_ci(rhos)[1], 1.0) < s["margin"]:
            return NOT_SHOWN
        return INCONCLUSIVE
    if test == "spearman-permutation":
        x, y = np.asarray(s["x"], float), np.asarray(s["y"], float)
        n = len(x)
        if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
            return None
        rho = stats.spearmanr(x, y).statistic
        r = max(min(rho, 0.999999), -0.999999)
        half = 1.959964 * math.sqrt((1 + r * r / 2) / (n - 3))
        lo, hi = math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)
        rng = np.random.default_rng(2)
        ry = stats.rankdata(y)
        null = np.array([stats.spearmanr(x, rng.permutation(ry)).statistic for _ in range(4000)])
        p = (1 + (null >= rho - 1e-12).sum()) / 4001
        if lo > s["margin"] and p <= ALPHA:
            return SHOWN
        return NOT_SHOWN if hi < s["margin"] else INCONCLUSIVE
    if test == "all-of":
        parts = [_verdict(p["test"], p["sample"]) for p in s["parts"]]
        if not parts:
            return None
        parts = [INCONCLUSIVE if v is None else v for v in parts]
        return NOT_SHOWN if NOT_SHOWN in parts else SHOWN if all(v == SHOWN for v in parts) else INCONCLUSIVE
    raise ValueError(f"unknown test {test!r}")


def near_the_line(f: dict) -> bool:
    """A Monte-Carlo second route may differ where the p sits at 2.5% within its own error."""
    p = f.get("p")
    return f["test"] in ("spearman-permutation", "page-L") and p is not None and abs(p - ALPHA) < 0.006


def disagreements(run_dir: Path) -> list[str]:
    out = []
    for path in sorted(Path(run_dir).glob("*/summary.json")):
        for f in json.loads(path.read_text()).get("findings", []):
            again = recheck(f) or INCONCLUSIVE
            if again != f["verdict"] and not near_the_line(f):
                out.append(f"{path.parent.name} {f['id']}: {f['verdict']} in the run, {again} by the second route")
    return out


if __name__ == "__main__":
    bad = disagreements(Path(sys.argv[1]))
    print("\n".join(bad) or "every verdict reproduced by the second route")
    sys.exit(1 if bad else 0)
