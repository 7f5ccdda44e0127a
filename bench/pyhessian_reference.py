"""PyHessian's algorithms (Yao et al. 2020; pip package `pyhessian` 0.1, pyhessian/hessian.py and
utils.py) transcribed for one model on one (x, y) batch, the way `hessian(model, criterion,
data=(x, y), cuda=False)` runs them: the gradient's graph built once, each Hessian-vector
product one more backward pass through it (double backward).

- eigenvalues(maxIter=100, tol=1e-3): power iteration from a Gaussian vector, stopping when
  |λ − λ_new| / (|λ| + 1e-6) < tol and returning the previous λ (as PyHessian does). It finds the
  eigenvalue largest in size, which is the most negative one when that one is larger in size.
- trace(maxIter=100, tol=1e-3): Hutchinson with Rademacher vectors, stopping when the running
  mean moves by less than tol relative to the previous mean, denominator (mean + 1e-6) as
  written (no abs).

The benchmark (bench_curvature.py) times it and the tests (tests/test_analysis_api.py) check
dlscope against it; where the package itself can be imported the tests check it against this too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pyhessian_style(model, x, y, tol: float = 1e-3, max_iter: int = 100, seed: int = 0, criterion=F.cross_entropy) -> dict:
    """{"top", "trace", "trace_ci", "n_hvp", "power_iterations", "trace_samples"} for one model.
    trace_ci is a 95% interval from the trace samples (normal, mean ± 1.96·sd/√m): PyHessian
    reports none, it is here to compare accuracy."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = criterion(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(vs):
        return torch.autograd.grad(grads, params, grad_outputs=vs, only_inputs=True, retain_graph=True)

    def dot(a, b):
        return sum(torch.sum(u * v) for u, v in zip(a, b))

    def normalization(v):
        s = float(dot(v, v) ** 0.5)
        return [t / (s + 1e-6) for t in v]

    g = torch.Generator().manual_seed(seed)
    v = normalization([torch.randn(p.shape, generator=g) for p in params])
    lam, n_hvp, iterations = None, 0, 0
    for _ in range(max_iter):
        hv = hvp(v)
        n_hvp += 1
        iterations += 1
        new = float(dot(hv, v))
        v = normalization(hv)
        if lam is None:
            lam = new
        elif abs(lam - new) / (abs(lam) + 1e-6) < tol:
            break
        else:
            lam = new
    samples, mean = [], 0.0
    for _ in range(max_iter):
        z = [torch.randint(0, 2, p.shape, generator=g).to(p.dtype) * 2 - 1 for p in params]
        samples.append(float(dot(hvp(z), z)))
        n_hvp += 1
        new = sum(samples) / len(samples)
        if abs(new - mean) / (mean + 1e-6) < tol:
            break
        mean = new
    m = len(samples)
    tr = sum(samples) / m
    sd = math.sqrt(sum((s - tr) ** 2 for s in samples) / (m - 1)) if m > 1 else math.nan
    half = 1.96 * sd / math.sqrt(m)
    return {
        "top": lam,
        "trace": tr,
        "trace_ci": (tr - half, tr + half),
        "n_hvp": n_hvp,
        "power_iterations": iterations,
        "trace_samples": m,
    }
