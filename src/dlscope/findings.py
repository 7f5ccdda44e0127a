"""Claims as code: each experiment states what the study (or the literature) claims, and a claim
is a function of the experiment's own numbers that returns a Finding with a verdict.

A verdict is "shown", "not shown" or "inconclusive":
    shown         the 95% interval lies wholly on the claimed side (beyond `margin`), or, for the
                  rank tests, the exact one-sided p is at most 2.5%
    not shown     the data decide against the claim: the interval lies wholly on the other side
                  (or wholly below a declared negligible effect), or the exact test decides the
                  opposite direction
    inconclusive  neither: the seeds disagree, or this n cannot show an effect of this size;
                  `detectable` says which effect it could have shown

One method per kind of claim, chosen for honest coverage at 3 to 10 seeds (see
../shared/docs/STATISTICS.md; a percentile bootstrap over 3 values is [min, max] and covers the
mean 75% of the time, so none is used here):
    greater      a difference paired by seed: Student-t interval of the mean; from 6 seeds on also
                 an exact sign-flip permutation test, and both must agree. share=True: the share of
                 seeds where A wins, Clopper-Pearson (for outcomes where a model stalls in some seeds)
    trend        a monotone trend or an ordering over a sweep, seed by seed: Page's L test, exact
                 (seeds as blocks); effect size the mean per-seed Spearman rho, t-interval over seeds
    within       the mean lies inside [low, high]: Student-t interval
    at_least /   a share of runs: Clopper-Pearson (exact binomial) interval
    at_most
    correlation  an association over many independent runs: Spearman's rho, a permutation p, and a
                 Fisher-z interval with the Bonett-Wright variance
    all_of       a claim that holds only if each of its parts does (intersection-union: p = max)
Each returns a `Stat`, which unpacks as (value, ci, verdict, n) and also carries `test`, `p`,
`sample` (the numbers and parameters the statistic is computed from: anyone can recompute the
verdict from summary.json alone) and `detectable` (the smallest effect, in the units of `value`,
that this n and spread could show). `Finding.from_stat` turns one into a Finding;
`holm_survivors` applies Holm's correction over a report's findings.

Everything is deterministic: the same numbers always give the same verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from scipy import stats

SHOWN, NOT_SHOWN, INCONCLUSIVE = "shown", "not shown", "inconclusive"
VERDICTS = (SHOWN, NOT_SHOWN, INCONCLUSIVE)
LEVEL = 0.95
ALPHA_ONE_SIDED = (1 - LEVEL) / 2  # a two-sided 95% interval clears a line <=> one-sided p <= 2.5%
SIGN_FLIP_MIN_N = 6  # below 6 seeds no sign-flip test can reach p < 0.05 two-sided (min p = 2 * 2^-n)
PERM_RESAMPLES = 9999  # correlation's permutation p beyond exact enumeration (seeded: deterministic)
PERM_SEED = 0
EXACT_PERM_MAX_N = 8  # correlation: all n! pairings up to this n


class Stat(tuple):
    """A claim's statistic: unpacks as (value, ci, verdict, n), and carries how it was computed."""

    def __new__(
        cls,
        value,
        ci,
        verdict,
        n,
        *,
        test: str,
        p: float | None = None,
        sample: Any = None,
        detectable: float | None = None,
        reason: str = "",
    ):
        self = super().__new__(cls, (finite_or_none(value), _interval(ci), verdict, int(n)))
        self.test, self.p, self.sample, self.detectable, self.reason = (
            test,
            finite_or_none(p),
            sample,
            finite_or_none(detectable),
            reason,
        )
        return self

    value = property(lambda self: self[0])
    ci = property(lambda self: self[1])
    verdict = property(lambda self: self[2])
    n = property(lambda self: self[3])


@dataclass
class Finding:
    id: str  # stable, kebab-case, unique within an experiment
    claim: str  # the claim in one sentence
    source: str  # who claims it: "original" (the write-up), or a paper ("Novak et al. 2018")
    verdict: str  # one of VERDICTS
    statistic: str  # what `value` is, in words ("mean over seeds of test-acc(cnn-2) − test-acc(cnn-1)")
    value: float | None
    ci: list[float] | None  # [low, high], a 95% interval of `value`; None where there is none
    n: int  # seeds or runs the statistic rests on
    note: str = ""  # one line: why this verdict (which seeds disagree, which budget cannot decide)
    test: str = ""  # the method (see the module docstring), e.g. "paired-t", "page-L"
    p: float | None = None  # its p-value, one-sided in the claimed direction
    sample: Any = None  # the numbers it is computed from, with the claim's parameters
    detectable: float | None = None  # the smallest value this design could have shown

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: must be one of {VERDICTS}")

    @classmethod
    def from_stat(cls, stat: Stat, id: str, claim: str, source: str, statistic: str, note: str = "") -> "Finding":
        value, ci, verdict, n = stat
        reason = stat.reason if verdict == INCONCLUSIVE and stat.reason else ""
        note = "; ".join(x for x in (note, reason) if x)
        return cls(id, claim, source, verdict, statistic, value, ci, n, note, stat.test, stat.p, stat.sample, stat.detectable)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["value"] = finite_or_none(d["value"])
        d["ci"] = _interval(d["ci"])
        d["p"] = finite_or_none(d["p"])
        d["detectable"] = finite_or_none(d["detectable"])
        return d


def finite_or_none(x) -> float | None:
    """x as a float if it is a finite number, else None (also for None and text): JSON has no NaN,
    so a diverged or missing number is written as null. The one such helper of the engine, the
    experiments, the findings and the report."""
    if x is None or isinstance(x, str):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def jsonable(obj):
    """Plain JSON: tensors and numpy values to lists and numbers, tuples to lists, every non-finite
    float to null (finite_or_none), recursively; anything else as it is."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # a tensor or a numpy array or scalar
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return finite_or_none(obj)
    return obj


def _interval(ci):
    if ci is None:
        return None
    lo, hi = (finite_or_none(c) for c in ci)
    return None if lo is None or hi is None else [lo, hi]


def finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return a[np.isfinite(a)]


def _floats(a) -> list[float]:
    return [float(v) for v in a]


def none_reason(n: int, what: str = "seeds") -> str:
    return f"no {what} with a value" if n == 0 else f"one {what[:-1]} only: no interval"


# --------------------------------------------------------------------------- a mean (paired by seed)


def t_interval(a: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """Student-t interval of the mean (scipy's ttest_1samp). Zero width only when the values are
    identical; None below 2 values."""
    if len(a) < 2:
        return None
    if np.all(a == a[0]):
        return [float(a[0]), float(a[0])]
    ci = stats.ttest_1samp(a, 0.0).confidence_interval(level)
    return [float(ci.low), float(ci.high)]


def t_detectable(a: np.ndarray, margin: float = 0.0) -> float | None:
    """The smallest mean this n and spread could show beyond `margin`: margin + t_0.975 * s / sqrt(n)."""
    if len(a) < 2:
        return None
    return margin + float(stats.t.ppf(1 - ALPHA_ONE_SIDED, len(a) - 1)) * float(a.std(ddof=1)) / math.sqrt(len(a))


def t_p_greater(a: np.ndarray, margin: float = 0.0) -> float | None:
    """One-sided p of "mean > margin" (paired t)."""
    if len(a) < 2:
        return None
    if np.all(a == a[0]):
        return 0.0 if a[0] > margin else 1.0
    return float(stats.ttest_1samp(a, margin, alternative="greater").pvalue)


def sign_flip_p(a: np.ndarray, margin: float = 0.0) -> float:
    """Exact one-sided sign-flip permutation p of "mean > margin": every one of the 2^n sign
    patterns of a - margin (scipy's permutation_test; exact up to its resample budget)."""
    d = a - margin
    res = stats.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        alternative="greater",
        n_resamples=2 ** min(len(d), 16),
        vectorized=False,
        rng=np.random.default_rng(PERM_SEED),
    )
    return float(res.pvalue)


def greater(diffs: Sequence[float], margin: float = 0.0, *, share: bool = False, negligible: float = 0.0) -> Stat:
    """The claim "the differences are positive" (beyond `margin`), paired by seed.

    Default: value = the mean, ci = Student-t 95% interval (assumes roughly normal per-seed
    differences); shown if the interval lies above margin and, from 6 seeds on, the exact sign-flip
    test agrees (p <= 2.5%, no normality assumed); not shown if the interval lies below
    margin + negligible. `share=True` asks instead whether A wins in most seeds (value = share of
    seeds with a difference above margin, Clopper-Pearson interval against 1/2): use it where the
    outcome is bimodal (a model stalls in some seeds), where a mean says little."""
    a = finite(diffs)
    n = len(a)
    if share:
        wins = int((a > margin).sum())
        s = at_least(wins, n, 0.5, strict=True)
        return Stat(
            s.value,
            s.ci,
            s.verdict,
            n,
            test="share-clopper-pearson",
            p=s.p,
            sample={"diffs": _floats(a), "margin": margin},
            detectable=s.detectable,
            reason=s.reason,
        )
    sample = {"diffs": _floats(a), "margin": margin, "negligible": negligible}
    value = float(a.mean()) if n else None
    if n < 2:
        return Stat(value, None, INCONCLUSIVE, n, test="paired-t", sample=sample, reason=none_reason(n))
    ci = t_interval(a)
    p = t_p_greater(a, margin)
    test = "paired-t"
    flip_ok = True
    if n >= SIGN_FLIP_MIN_N:
        test = "paired-t+sign-flip"
        p_flip = sign_flip_p(a, margin)
        flip_ok = p_flip <= ALPHA_ONE_SIDED
        p = max(p, p_flip)  # both must agree: report the weaker of the two
    detectable = t_detectable(a, margin)
    if ci[0] > margin and flip_ok:
        verdict, reason = SHOWN, ""
    elif ci[1] < margin + negligible:
        verdict, reason = NOT_SHOWN, ""
    else:
        verdict, reason = INCONCLUSIVE, small_n_reason(n, margin, detectable)
    return Stat(value, ci, verdict, n, test=test, p=p, sample=sample, detectable=detectable, reason=reason)


def small_n_reason(n: int, margin: float, detectable: float | None) -> str:
    sd_units = float(stats.t.ppf(1 - ALPHA_ONE_SIDED, n - 1)) / math.sqrt(n)
    if detectable is None:
        return ""
    return (
        f"with n = {n} this design shows only means above {detectable:.3g} "
        f"({sd_units:.2f} SD of the per-seed values above {margin:g})"
    )


def within(values: Sequence[float], low: float, high: float) -> Stat:
    """The claim "the mean lies inside [low, high]" (e.g. test accuracy at chance): shown if the
    Student-t interval lies wholly inside, not shown if it lies wholly outside."""
    a = finite(values)
    n = len(a)
    value = float(a.mean()) if n else None
    sample = {"values": _floats(a), "low": low, "high": high}
    if n < 2:
        return Stat(value, None, INCONCLUSIVE, n, test="within-t", sample=sample, reason=none_reason(n))
    ci = t_interval(a)
    # one-sided p of "inside": the larger of the two one-sided tests (an intersection of both)
    p = max(t_p_greater(a, low), t_p_greater(-a, -high))
    half = (ci[1] - ci[0]) / 2
    if low <= ci[0] and ci[1] <= high:
        verdict, reason = SHOWN, ""
    elif ci[1] < low or ci[0] > high:
        verdict, reason = NOT_SHOWN, ""
    else:
        verdict, reason = INCONCLUSIVE, f"with n = {n} the interval is ±{half:.3g} wide and reaches an edge"
    return Stat(value, ci, verdict, n, test="within-t", p=p, sample=sample, detectable=half, reason=reason)


# --------------------------------------------------------------------------- shares of runs


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> list[float] | None:
    """Exact (Clopper-Pearson) interval for k successes in n trials; None for n = 0."""
    if n <= 0:
        return None
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return [float(ci.low), float(ci.high)]


@lru_cache(maxsize=None)
def _smallest_share_shown(n: int, fraction: float) -> float | None:
    return next((j / n for j in range(n + 1) if clopper_pearson(j, n)[0] > fraction), None)


@lru_cache(maxsize=None)
def _largest_share_shown(n: int, fraction: float) -> float | None:
    return next((j / n for j in range(n, -1, -1) if clopper_pearson(j, n)[1] < fraction), None)


def at_least(k: int, n: int, fraction: float, *, strict: bool = False) -> Stat:
    """The claim "at least `fraction` of the n cases succeed" (more than, if strict), from k
    successes: shown if the Clopper-Pearson interval's low end lies above `fraction`, not shown if
    its high end lies below. `detectable`: the smallest share of n that would be shown."""
    k, n = int(k), int(n)
    sample = {"k": k, "n": n, "fraction": fraction}
    ci = clopper_pearson(k, n)
    if ci is None:
        return Stat(None, None, INCONCLUSIVE, 0, test="clopper-pearson", sample=sample, reason="no runs")
    p = float(stats.binomtest(k, n, fraction, alternative="greater").pvalue) if 0 < fraction < 1 else None
    smallest = _smallest_share_shown(n, fraction)
    if ci[0] > fraction or (not strict and ci[0] >= fraction and fraction > 0):
        verdict, reason = SHOWN, ""
    elif ci[1] < fraction:
        verdict, reason = NOT_SHOWN, ""
    else:
        verdict = INCONCLUSIVE
        reason = (
            f"with n = {n} even {n} of {n} cannot show a share above {fraction:g}"
            if smallest is None
            else f"with n = {n} a share of at least {smallest:.3g} would be needed"
        )
    return Stat(k / n, ci, verdict, n, test="clopper-pearson", p=p, sample=sample, detectable=smallest, reason=reason)


def at_most(k: int, n: int, fraction: float) -> Stat:
    """The claim "fewer than `fraction` of the n cases have the property", from k that have it:
    shown if the Clopper-Pearson interval's high end lies below `fraction`, not shown if its low
    end lies above."""
    k, n = int(k), int(n)
    sample = {"k": k, "n": n, "fraction": fraction}
    ci = clopper_pearson(k, n)
    if ci is None:
        return Stat(None, None, INCONCLUSIVE, 0, test="clopper-pearson-at-most", sample=sample, reason="no runs")
    p = float(stats.binomtest(k, n, fraction, alternative="less").pvalue) if 0 < fraction < 1 else None
    largest = _largest_share_shown(n, fraction)
    if ci[1] < fraction:
        verdict, reason = SHOWN, ""
    elif ci[0] > fraction:
        verdict, reason = NOT_SHOWN, ""
    else:
        verdict = INCONCLUSIVE
        reason = (
            f"with n = {n} even 0 of {n} cannot show a share below {fraction:g}"
            if largest is None
            else f"with n = {n} a share of at most {largest:.3g} would be needed"
        )
    return Stat(k / n, ci, verdict, n, test="clopper-pearson-at-most", p=p, sample=sample, detectable=largest, reason=reason)


# --------------------------------------------------------------------------- trends over a sweep


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None if either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or len(x) != len(y) or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    return float(stats.spearmanr(x, y).statistic)


@lru_cache(maxsize=None)
def _page_block_counts(k: int) -> np.ndarray:
    """counts[v] = how many permutations r of 1..k have sum_j j * r_j = v: the null distribution of
    one seed's Page statistic. Dynamic programming over the set of ranks used (2^k states), so
    k = 11 sweep points take milliseconds where enumerating 11! orders would take minutes."""
    top = sum(j * j for j in range(1, k + 1))
    table = {0: np.zeros(top + 1, dtype=np.float64)}
    table[0][0] = 1.0
    for mask in range(1 << k):
        counts = table.pop(mask, None)
        if counts is None:
            continue
        position = bin(mask).count("1") + 1
        if position > k:
            return counts
        for r in range(k):
            if not mask & (1 << r):
                nxt = mask | (1 << r)
                shifted = np.zeros_like(counts)
                step = position * (r + 1)
                shifted[step:] = counts[: len(counts) - step]
                if nxt in table:
                    table[nxt] += shifted
                else:
                    table[nxt] = shifted
    raise AssertionError("unreachable")


@lru_cache(maxsize=None)
def page_null(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact null distribution of Page's L = sum over m seeds of sum_j j * rank_j (k levels):
    (values, probabilities). Seeds are independent blocks, so it is the m-fold convolution."""
    block = _page_block_counts(k)
    block = block / block.sum()
    dist = np.array([1.0])
    for _ in range(m):
        dist = np.convolve(dist, block)
    return np.arange(len(dist), dtype=float), dist


def page_p(ranks: np.ndarray) -> float:
    """Exact one-sided p of Page's L for ranks [m seeds, k levels] (rank 1..k within each seed,
    predicted to rise with the level): P(L >= observed) under "no ordering within any seed". Tied
    (average) ranks are taken at the lower integer L, which keeps the p conservative."""
    m, k = ranks.shape
    L = float((ranks * np.arange(1, k + 1)).sum())
    values, probs = page_null(m, k)
    return float(min(1.0, probs[values >= math.floor(L + 1e-9)].sum()))


def page_detectable(m: int, k: int) -> float | None:
    """The smallest mean per-seed Spearman rho that reaches p <= 2.5% with m seeds and k levels
    (None: no ordering can, e.g. one seed and 3 levels)."""
    values, probs = page_null(m, k)
    tail = np.cumsum(probs[::-1])[::-1]
    ok = np.nonzero(tail <= ALPHA_ONE_SIDED)[0]
    if not len(ok):
        return None
    sum_j2 = k * (k + 1) * (2 * k + 1) / 6
    # with no ties, rho_s = 1 - 12 (sum j^2 - L_s) / (k (k^2 - 1)); averaged over seeds:
    return 1 - 12 * (m * sum_j2 - values[ok[0]]) / (m * k * (k * k - 1))


def _rank_rows(y: np.ndarray) -> np.ndarray:
    return np.vstack([stats.rankdata(row) for row in y])


def trend(x: Sequence[float], per_seed_y: Sequence[Sequence[float]], sign: int = 1, margin: float = 0.0) -> Stat:
    """A monotone trend of y in x, seed by seed: per_seed_y[s] holds y at each x for seed s (sign
    +1: claimed rising, -1: claimed falling; an ordering of k models is a trend over their claimed
    order). Test: Page's L, exact, seeds as blocks (a permutation test within each seed: no
    assumption on the distribution of y); shown if its one-sided p <= 2.5% (and the mean rho exceeds
    margin), not shown if Page's test decides the opposite ordering. Effect size: the mean per-seed
    Spearman rho (times sign) with a Student-t interval over seeds (none with fewer than 2 seeds,
    or where every seed has the same rho: no spread to estimate). A level where some seed has no
    finite value is left out."""
    xs = np.asarray([float(v) for v in x], float)
    ys = np.asarray([[np.nan if v is None else float(v) for v in row] for row in per_seed_y], float).reshape(-1, len(xs))
    keep = np.isfinite(ys).all(0) & np.isfinite(xs)
    order = np.argsort(xs[keep], kind="stable")
    xs, ys = xs[keep][order], ys[:, keep][:, order]
    m, k = ys.shape
    sample = {"x": _floats(xs), "y": [_floats(r) for r in ys], "sign": sign, "margin": margin}
    if m == 0 or k < 3:
        return Stat(
            None,
            None,
            INCONCLUSIVE,
            m,
            test="page-L",
            sample=sample,
            reason="fewer than 3 sweep points with a value in every seed",
        )
    rhos = np.array([sign * (spearman(xs, row) or 0.0) for row in ys])
    value = float(rhos.mean())
    ranks = _rank_rows(sign * ys)
    p = page_p(ranks)
    p_opposite = page_p(k + 1 - ranks)
    ci = None
    if m >= 2 and not np.all(rhos == rhos[0]):
        lo, hi = t_interval(rhos)
        ci = [max(lo, -1.0), min(hi, 1.0)]
    detectable = page_detectable(m, k)
    if p <= ALPHA_ONE_SIDED and value > margin:
        verdict, reason = SHOWN, ""
    elif p_opposite <= ALPHA_ONE_SIDED or (ci is not None and ci[1] < margin):
        verdict, reason = NOT_SHOWN, ""
    else:
        verdict = INCONCLUSIVE
        reason = (
            f"with {m} seed{'s' if m > 1 else ''} × {k} levels no ordering can reach p ≤ 0.025"
            if detectable is None
            else f"Page p = {p:.3g}; with {m} seed{'s' if m > 1 else ''} × {k} levels a mean ρ of about "
            f"{detectable:.2f} is needed"
        )
    return Stat(value, ci, verdict, m, test="page-L", p=p, sample=sample, detectable=detectable, reason=reason)


# --------------------------------------------------------------------------- associations over runs


def correlation(x: Sequence[float], y: Sequence[float], margin: float = 0.0) -> Stat:
    """The claim "y rises with x" over independent runs (pairs with a non-finite side dropped):
    Spearman's rho; one-sided permutation p (all pairings up to 8 runs, else 9,999 seeded
    resamples); 95% interval from Fisher's z with the Bonett-Wright variance (1 + rho^2/2)/(n - 3).
    shown if the interval lies above margin and the permutation p <= 2.5%; not shown if the
    interval lies below margin. Meant for many runs (min-ratio's 100); with fewer than 10 the
    interval is rough and mostly says so."""
    pts = [
        (float(a), float(b))
        for a, b in zip(x, y)
        if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))
    ]
    n = len(pts)
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    sample = {"x": _floats(xs), "y": _floats(ys), "margin": margin}
    rho = spearman(xs, ys) if n >= 4 else None
    if rho is None:
        return Stat(
            rho,
            None,
            INCONCLUSIVE,
            n,
            test="spearman-permutation",
            sample=sample,
            reason="fewer than 4 runs, or one side constant",
        )
    p = spearman_perm_p(xs, ys)
    ci = fisher_interval(rho, n)
    detectable = math.tanh(math.atanh(max(min(margin, 0.999), -0.999)) + 1.959964 / math.sqrt(n - 3)) if n > 3 else None
    if ci is not None and ci[0] > margin and p <= ALPHA_ONE_SIDED:
        verdict, reason = SHOWN, ""
    elif ci is not None and ci[1] < margin:
        verdict, reason = NOT_SHOWN, ""
    else:
        verdict = INCONCLUSIVE
        reason = f"with n = {n} only ρ above about {detectable:.2f} can be shown" if detectable is not None else ""
    return Stat(rho, ci, verdict, n, test="spearman-permutation", p=p, sample=sample, detectable=detectable, reason=reason)


def fisher_interval(rho: float, n: int, level: float = LEVEL) -> list[float] | None:
    """95% interval of Spearman's rho: Fisher's z with Bonett & Wright's (2000) variance."""
    if n <= 3:
        return None
    r = max(min(rho, 0.999999), -0.999999)
    half = float(stats.norm.ppf(0.5 + level / 2)) * math.sqrt((1 + r * r / 2) / (n - 3))
    return [math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)]


def spearman_perm_p(xs: np.ndarray, ys: np.ndarray) -> float:
    """One-sided permutation p of "rho > 0": y's ranks shuffled against x's (scipy)."""
    rx, ry = stats.rankdata(xs), stats.rankdata(ys)
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())

    def rho(r, axis=-1):  # Pearson of ranks, for a batch of shuffled rank vectors
        r = r - r.mean(axis=axis, keepdims=True)
        return (r * rx).sum(axis=axis) / np.linalg.norm(r, axis=axis)

    exact = len(xs) <= EXACT_PERM_MAX_N
    res = stats.permutation_test(
        (ry,),
        rho,
        permutation_type="pairings",
        alternative="greater",
        vectorized=True,
        n_resamples=math.inf if exact else PERM_RESAMPLES,
        rng=np.random.default_rng(PERM_SEED),
    )
    return float(res.pvalue)


# --------------------------------------------------------------------------- composite claims


def all_of(parts: Sequence[Stat], labels: Sequence[str]) -> Stat:
    """A claim that holds only if each part does ("every model fits"): shown if every part is
    shown, not shown if any part is not shown, else inconclusive. Its p is the largest of the
    parts' (an intersection-union test: no correction needed); value, ci and n are those of the
    part closest to failing (the largest p)."""
    if not parts:
        return Stat(None, None, INCONCLUSIVE, 0, test="all-of", sample={"parts": []}, reason="no parts")
    verdicts = [s.verdict for s in parts]
    verdict = NOT_SHOWN if NOT_SHOWN in verdicts else SHOWN if all(v == SHOWN for v in verdicts) else INCONCLUSIVE
    weakest = max(parts, key=lambda s: 1.0 if s.p is None else s.p)
    ps = [s.p for s in parts]
    p = None if any(q is None for q in ps) else max(ps)
    sample = {"parts": [{"label": lab, "test": s.test, "sample": s.sample} for s, lab in zip(parts, labels)]}
    reasons = [f"{lab}: {s.reason}" for s, lab in zip(parts, labels) if s.verdict == INCONCLUSIVE and s.reason]
    return Stat(
        weakest.value,
        weakest.ci,
        verdict,
        weakest.n,
        test="all-of",
        p=p,
        sample=sample,
        detectable=weakest.detectable,
        reason="; ".join(reasons[:2]),
    )


# --------------------------------------------------------------------------- over a whole report


def holm_survivors(ps: Sequence[float | None], alpha: float = ALPHA_ONE_SIDED) -> list[bool]:
    """Holm's step-down correction over a report's claims at one-sided level `alpha`: True where
    a p stays significant with every tested claim counted (None: not tested, never survives)."""
    tested = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    keep = [False] * len(ps)
    for rank, (p, i) in enumerate(tested):
        if p > alpha / (len(tested) - rank):
            break
        keep[i] = True
    return keep


def render(findings: Sequence[dict]) -> list[str]:
    """One line per finding, for the end of `dlscope run`."""
    lines = []
    for f in findings:
        ci = f.get("ci")
        ci_txt = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci and None not in ci else ""
        val = f.get("value")
        val_txt = f"{val:.3g}" if isinstance(val, (int, float)) else "—"
        p = f.get("p")
        p_txt = f", p={p:.2g}" if isinstance(p, (int, float)) else ""
        lines.append(f"{f['verdict'].upper():>12}  {f['id']}: {val_txt}{ci_txt}, n={f.get('n')}{p_txt}  ({f.get('note', '')})")
    return lines
