"""Claims as code: each experiment states what the study (or the literature) claims, and a claim
is a function of the experiment's own numbers that returns a Finding with a verdict.

A verdict is "shown", "not shown" or "inconclusive":
    shown         the uncertainty interval lies wholly on the claimed side (beyond `margin`)
    not shown     the interval lies wholly on the other side: the data decide against the claim
    inconclusive  the interval straddles the line: the seeds disagree or the budget cannot decide
Every Finding carries the statistic it used, its value, a 95% interval over seeds (or points), n,
and a one-line note; `summary.json` stores them as `"findings": [Finding.as_dict(), ...]`.

The statistics here are plain and deterministic (a seeded bootstrap, exact counts), so the same
numbers always give the same verdict and anyone can recompute one from summary.json.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

SHOWN, NOT_SHOWN, INCONCLUSIVE = "shown", "not shown", "inconclusive"
VERDICTS = (SHOWN, NOT_SHOWN, INCONCLUSIVE)
LEVEL = 0.95
N_BOOT = 4000
BOOT_SEED = 0  # fixed: a verdict is a function of the numbers alone


@dataclass
class Finding:
    id: str  # stable, kebab-case, unique within an experiment
    claim: str  # the claim in one sentence
    source: str  # who claims it: "original" (the write-up), or a paper ("Novak et al. 2018")
    verdict: str  # one of VERDICTS
    statistic: str  # what `value` is, in words ("mean over seeds of test-acc(cnn-2) − test-acc(cnn-1)")
    value: float | None
    ci: list[float] | None  # [low, high], a 95% interval of `value`; None where there is none
    n: int  # seeds or points the statistic rests on
    note: str = ""  # one line: why this verdict (which seeds disagree, which budget cannot decide)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: must be one of {VERDICTS}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["value"] = _num(d["value"])
        d["ci"] = None if d["ci"] is None else [_num(c) for c in d["ci"]]
        return d


def _num(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return a[np.isfinite(a)]


def bootstrap_ci(values: Sequence[float], statistic: Callable = np.mean, level: float = LEVEL,
                 n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> list[float] | None:
    """Percentile bootstrap interval of `statistic` over `values` (non-finite values dropped).
    None with fewer than 2 values: one seed has no spread to bootstrap."""
    a = finite(values)
    if len(a) < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    stats = statistic(a[idx], axis=1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def verdict_from_ci(ci: list[float] | None, margin: float = 0.0) -> str:
    """shown if the whole interval lies above `margin`, not shown if it lies at or below it."""
    if ci is None:
        return INCONCLUSIVE
    lo, hi = ci
    if lo > margin:
        return SHOWN
    if hi <= margin:
        return NOT_SHOWN
    return INCONCLUSIVE


def greater(diffs: Sequence[float], margin: float = 0.0) -> tuple[float | None, list[float] | None, str, int]:
    """The claim "the differences are positive" (beyond `margin`), as (mean, 95% CI, verdict, n).
    Pass per-seed differences (paired by seed) or any sample whose mean should exceed margin."""
    a = finite(diffs)
    ci = bootstrap_ci(a)
    value = float(a.mean()) if len(a) else None
    return value, ci, verdict_from_ci(ci, margin), len(a)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None if either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or len(x) != len(y):
        return None
    rx, ry = _ranks(x), _ranks(y)
    sx, sy = rx.std(), ry.std()
    if sx == 0 or sy == 0:
        return None
    return float(((rx - rx.mean()) * (ry - ry.mean())).mean() / (sx * sy))


def _ranks(a: np.ndarray) -> np.ndarray:
    order = a.argsort(kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a), dtype=float)
    for v in np.unique(a):  # ties share their average rank
        tie = a == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def trend(x: Sequence[float], per_seed_y: Sequence[Sequence[float]], sign: int = 1, margin: float = 0.0):
    """A monotone trend of y in x, seed by seed: per_seed_y[s] holds y at each x for seed s.
    Statistic: mean over seeds of Spearman's rho(x, y_s), times `sign` (+1: claimed rising,
    -1: claimed falling); CI: bootstrap over seeds. With one seed, the interval comes from a
    permutation test of that one rho instead (is it outside what shuffled y would give?).
    Returns (value, ci, verdict, n)."""
    rhos = [r for r in (spearman(x, ys) for ys in per_seed_y) if r is not None]
    rhos = [sign * r for r in rhos]
    if len(rhos) >= 2:
        return greater(rhos, margin)
    if len(rhos) == 1:
        ci = permutation_band(len(x))
        rho = rhos[0]
        verdict = SHOWN if rho > ci[1] else NOT_SHOWN if rho <= ci[0] else INCONCLUSIVE
        return rho, ci, verdict, 1
    return None, None, INCONCLUSIVE, 0


def permutation_band(k: int, n_perm: int = N_BOOT, seed: int = BOOT_SEED) -> list[float]:
    """The central 95% of Spearman's rho between 0..k-1 and a random permutation of it: a rho
    outside this band is unlikely under "no trend"."""
    if k < 2:
        return [0.0, 0.0]
    rng = np.random.default_rng(seed)
    x = np.arange(k, dtype=float)
    perms = rng.permuted(np.tile(x, (n_perm, 1)), axis=1)
    # no ties in a permutation: Spearman's closed form, all permutations at once
    rhos = 1 - 6 * ((perms - x) ** 2).sum(1) / (k * (k * k - 1))
    lo, hi = np.quantile(rhos, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def proportion_ci(k: int, n: int, level: float = LEVEL) -> list[float] | None:
    """Wilson score interval for k successes in n trials."""
    if n <= 0:
        return None
    z = 1.959963984540054 if level == 0.95 else float(np.sqrt(2) * _erfinv(level))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _erfinv(y: float) -> float:  # only for levels other than 95%: Newton on math.erf
    x = 0.0
    for _ in range(50):
        x -= (math.erf(x) - y) / (2 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


def at_least(k: int, n: int, fraction: float) -> tuple[float | None, list[float] | None, str, int]:
    """The claim "at least `fraction` of the n cases succeed", from k successes: verdict by the
    Wilson interval of k/n against `fraction`. Returns (k/n, ci, verdict, n)."""
    ci = proportion_ci(k, n)
    if ci is None:
        return None, None, INCONCLUSIVE, 0
    verdict = SHOWN if ci[0] >= fraction else NOT_SHOWN if ci[1] < fraction else INCONCLUSIVE
    return k / n, ci, verdict, n


def render(findings: Sequence[dict]) -> list[str]:
    """One line per finding, for the end of `dlscope run`."""
    lines = []
    for f in findings:
        ci = f.get("ci")
        ci_txt = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci and None not in ci else ""
        val = f.get("value")
        val_txt = f"{val:.3g}" if isinstance(val, (int, float)) else "—"
        lines.append(f"{f['verdict'].upper():>12}  {f['id']}: {val_txt}{ci_txt}, n={f.get('n')}  ({f.get('note', '')})")
    return lines


def within(values: Sequence[float], low: float, high: float) -> tuple[float | None, list[float] | None, str, int]:
    """The claim "the mean lies inside [low, high]" (e.g. test accuracy at chance), as (mean, 95%
    CI over the values, verdict, n): shown if the whole interval lies inside, not shown if it lies
    wholly outside, inconclusive if it straddles an edge."""
    a = finite(values)
    ci = bootstrap_ci(a)
    value = float(a.mean()) if len(a) else None
    if ci is None:
        return value, None, INCONCLUSIVE, len(a)
    if low <= ci[0] and ci[1] <= high:
        verdict = SHOWN
    elif ci[1] < low or ci[0] > high:
        verdict = NOT_SHOWN
    else:
        verdict = INCONCLUSIVE
    return value, ci, verdict, len(a)


def correlation(x: Sequence[float], y: Sequence[float], margin: float = 0.0, n_boot: int = N_BOOT,
                seed: int = BOOT_SEED) -> tuple[float | None, list[float] | None, str, int]:
    """The claim "y rises with x" over paired points (pairs with a non-finite side dropped), as
    (Spearman's rho, 95% bootstrap CI over the pairs, verdict, n). Resamples whose x or y is
    constant have no rho and are skipped."""
    pts = [(float(a), float(b)) for a, b in zip(x, y)
           if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))]
    n = len(pts)
    rho = spearman([p[0] for p in pts], [p[1] for p in pts]) if n >= 3 else None
    if rho is None:
        return rho, None, INCONCLUSIVE, n
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    rx, ry = _row_ranks(xs[idx]), _row_ranks(ys[idx])  # Spearman = Pearson of the ranks, row by row
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    ok = den > 0
    boots = (rx * ry).sum(1)[ok] / den[ok]
    ci = [float(v) for v in np.quantile(boots, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])] if ok.any() else None
    return rho, ci, verdict_from_ci(ci, margin), n


def _row_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks within each row of a [B, n] (ties share their average rank), as _ranks does for one."""
    less = (a[:, None, :] < a[:, :, None]).sum(-1)
    equal = (a[:, None, :] == a[:, :, None]).sum(-1)
    return less + (equal - 1) / 2.0
