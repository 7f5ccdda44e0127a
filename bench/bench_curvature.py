"""Curvature of many models at once, and the cost of a loss plane.

1. Top Hessian eigenvalue and trace of M cnn-1 models (seeded initialisations) on n CIFAR-10
   training images, cross-entropy, eval mode.
   dlscope: analysis.top_eigenvalues (Lanczos, stops when the top Ritz value moves ≤ tol) and
   analysis.trace (Hutch++, --trace-hvp products, 95% interval) on an engine.Ensemble: every
   member in the same batched Hessian-vector products (torch.func.vmap).
   reference: PyHessian's algorithms (Yao et al. 2020), one model at a time, written out here:
   power iteration with double-backward HVPs, stopping when |λ_new − λ_old| / |λ_old| < tol
   (its `eigenvalues(maxIter=100, tol=1e-3)`), and Hutchinson's trace stopping when the running
   mean moves < tol relatively (its `trace(maxIter=100, tol=1e-3)`).
2. A steps × steps filter-normalised loss plane for one cnn-1 on n images (analysis.loss_plane).

    python bench/bench_curvature.py [--models 16] [--n 1000] [--plane-n 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
os.environ.setdefault("DLSCOPE_DATA", str(BENCH.parent.parent / "shared" / "data"))

from dlscope import analysis, data, models  # noqa: E402
from dlscope.engine import Ensemble  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pyhessian_style(model, x, y, tol: float, max_iter: int = 100, seed: int = 0) -> dict:
    """PyHessian's power iteration and Hutchinson trace on one model (double-backward HVPs)."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(vs):
        return torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)

    def dot(a, b):
        return sum((u * v).sum() for u, v in zip(a, b))

    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=g) for p in params]
    norm = dot(v, v).sqrt()
    v = [t / norm for t in v]
    lam, n_hvp = None, 0
    for _ in range(max_iter):
        hv = hvp(v)
        n_hvp += 1
        new = float(dot(hv, v))
        norm = dot(hv, hv).sqrt()
        v = [t / norm for t in hv]
        if lam is not None and abs(new - lam) / (abs(lam) + 1e-6) < tol:
            lam = new
            break
        lam = new
    samples, mean = [], None
    for _ in range(max_iter):
        z = [torch.randint(0, 2, p.shape, generator=g).float() * 2 - 1 for p in params]
        samples.append(float(dot(hvp(z), z)))
        n_hvp += 1
        new = sum(samples) / len(samples)
        if mean is not None and abs(new - mean) / (abs(mean) + 1e-6) < tol:
            mean = new
            break
        mean = new
    return {"top": lam, "trace": mean, "n_hvp": n_hvp, "trace_samples": len(samples)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, default=16)
    p.add_argument("--n", type=int, default=1000, help="CIFAR-10 images for eigenvalue and trace")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--trace-hvp", type=int, default=30)
    p.add_argument("--plane-n", type=int, default=1000)
    p.add_argument("--plane-steps", type=int, default=21)
    p.add_argument("--reference-models", type=int, default=None, help="time the reference on this many models, scaled to --models")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip", nargs="*", default=[], choices=["curvature", "plane"])
    p.add_argument("--out", default=str(BENCH / "results-bench_curvature.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"threads": torch.get_num_threads(), "load_average": os.getloadavg()}

    if "curvature" not in args.skip:
        split = data.load("cifar10", "cpu", train_size=args.n).train
        members = []
        for s in range(args.models):
            torch.manual_seed(s)
            members.append(models.build("cnn-1"))
        ens = Ensemble.from_members(members, mode="vmap")
        t0, c0 = time.perf_counter(), cpu_seconds()
        eig = analysis.top_eigenvalues(ens, (split.x, split.y), tol=args.tol)
        tr = analysis.trace(ens, (split.x, split.y), n_hvp=args.trace_hvp)
        ours = (time.perf_counter() - t0, cpu_seconds() - c0)
        n_ref = args.reference_models or args.models
        t0, c0 = time.perf_counter(), cpu_seconds()
        ref = [pyhessian_style(m.eval(), split.x, split.y, args.tol) for m in members[:n_ref]]
        scale = args.models / n_ref
        theirs = ((time.perf_counter() - t0) * scale, (cpu_seconds() - c0) * scale)
        rel = [abs(a[0] - r["top"]) / abs(r["top"]) for a, r in zip(eig.values, ref)]
        results["curvature"] = {
            "models": args.models, "images": args.n, "tol": args.tol,
            "dlscope_s": ours[0], "dlscope_cpu_s": ours[1], "dlscope_hvp_per_model": eig.n_hvp + tr.n_hvp,
            "reference_s": theirs[0], "reference_cpu_s": theirs[1], "reference_timed_models": n_ref,
            "reference_hvp_per_model": sum(r["n_hvp"] for r in ref) / len(ref),
            "speedup_wall": theirs[0] / ours[0], "speedup_cpu": theirs[1] / ours[1],
            "top_eigenvalue_max_rel_diff": max(rel),
            "top_dlscope": [v[0] for v in eig.values[:n_ref]], "top_reference": [r["top"] for r in ref],
            "dlscope_converged": eig.converged[:n_ref],
            "trace_dlscope": tr.value[:n_ref], "trace_dlscope_ci": tr.ci[:n_ref], "trace_reference": [r["trace"] for r in ref],
        }
        print(json.dumps(results["curvature"], indent=1), flush=True)

    if "plane" not in args.skip:
        split = data.load("cifar10", "cpu", train_size=args.plane_n).train
        torch.manual_seed(0)
        model = models.build("cnn-1")
        t0, c0 = time.perf_counter(), cpu_seconds()
        plane = analysis.loss_plane(model, (split.x, split.y), steps=args.plane_steps)
        results["plane"] = {"images": args.plane_n, "steps": args.plane_steps, "wall_s": time.perf_counter() - t0,
                            "cpu_s": cpu_seconds() - c0, "centre_loss": float(plane.center_loss)}
        print(json.dumps(results["plane"], indent=1), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
