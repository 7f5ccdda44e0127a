"""Curvature of many models at once, and the cost of a loss plane.

1. Top Hessian eigenvalue and trace of M cnn-1 models (seeded initialisations) on n CIFAR-10
   training images, cross-entropy, eval mode.
   reference: PyHessian's algorithms (Yao et al. 2020), one model at a time, as transcribed in
   pyhessian_reference.py: power iteration with double-backward HVPs, stopping when
   |λ_new − λ_old| / |λ_old| < tol (its `eigenvalues(maxIter=100, tol=1e-3)`), and Hutchinson's
   trace stopping when the running mean moves < tol relatively (its `trace(maxIter=100,
   tol=1e-3)`). Run first, on --reference-models models (scaled to --models).
   dlscope: analysis.top_eigenvalues_and_trace on an engine.Ensemble of all the models: Lanczos
   to the same tol, and a trace whose 95% interval is at least as narrow as the reference's
   (trace_rtol = the reference's median relative half-width, unless --trace-rtol is given),
   Hutch++ on the Lanczos basis. PyHessian's tol says nothing about its trace's accuracy: its
   samples' interval does, and both intervals are printed.
2. A steps × steps filter-normalised loss plane for one cnn-1 on n images (analysis.loss_plane).

    python bench/bench_curvature.py [--models 16] [--n 1000] [--plane-n 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource

import time
from pathlib import Path

import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
os.environ.setdefault("DLSCOPE_DATA", str(BENCH.parent.parent / "shared" / "data"))

from dlscope import analysis, data, models  # noqa: E402
from dlscope.engine import Ensemble  # noqa: E402
from pyhessian_reference import pyhessian_style  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, default=16)
    p.add_argument("--n", type=int, default=1000, help="CIFAR-10 images for eigenvalue and trace")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument(
        "--trace-rtol",
        type=float,
        default=None,
        help="dlscope's trace: 95%% half-width / |trace| (default: the reference's median)",
    )
    p.add_argument("--max-trace-hvp", type=int, default=300, help="dlscope's trace: at most this many Hutchinson samples")
    p.add_argument("--plane-n", type=int, default=1000)
    p.add_argument("--plane-steps", type=int, default=21)
    p.add_argument(
        "--reference-models", type=int, default=None, help="time the reference on this many models, scaled to --models"
    )
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
        n_ref = args.reference_models or args.models
        t0, c0 = time.perf_counter(), cpu_seconds()
        ref = [pyhessian_style(m.eval(), split.x, split.y, args.tol, seed=i) for i, m in enumerate(members[:n_ref])]
        scale = args.models / n_ref
        theirs = ((time.perf_counter() - t0) * scale, (cpu_seconds() - c0) * scale)
        ref_rel_half = [(r["trace_ci"][1] - r["trace_ci"][0]) / 2 / abs(r["trace"]) for r in ref]
        rtol = args.trace_rtol or sorted(ref_rel_half)[len(ref_rel_half) // 2]
        t0, c0 = time.perf_counter(), cpu_seconds()
        eig, tr = analysis.top_eigenvalues_and_trace(
            ens, (split.x, split.y), tol=args.tol, trace_rtol=rtol, max_trace_hvp=args.max_trace_hvp
        )
        ours = (time.perf_counter() - t0, cpu_seconds() - c0)
        # Power iteration finds the eigenvalue largest in size: compare where that is the top one.
        rel = [abs(a[0] - r["top"]) / abs(r["top"]) for a, r in zip(eig.values, ref) if r["top"] > 0]
        results["curvature"] = {
            "models": args.models,
            "images": args.n,
            "tol": args.tol,
            "dlscope_s": ours[0],
            "dlscope_cpu_s": ours[1],
            "dlscope_hvp_per_model": tr.n_hvp,
            "dlscope_lanczos_steps": eig.n_hvp,
            "dlscope_trace_samples": tr.info["hutchinson_samples"],
            "reference_s": theirs[0],
            "reference_cpu_s": theirs[1],
            "reference_timed_models": n_ref,
            "reference_hvp_per_model": sum(r["n_hvp"] for r in ref) / len(ref),
            "reference_power_iterations": [r["power_iterations"] for r in ref],
            "reference_trace_samples": [r["trace_samples"] for r in ref],
            "speedup_wall": theirs[0] / ours[0],
            "speedup_cpu": theirs[1] / ours[1],
            "top_eigenvalue_max_rel_diff": max(rel) if rel else None,
            "reference_top_negative": sum(r["top"] < 0 for r in ref),
            "top_dlscope": [v[0] for v in eig.values[:n_ref]],
            "top_reference": [r["top"] for r in ref],
            "dlscope_converged": eig.converged[:n_ref],
            "trace_rtol": rtol,
            "trace_dlscope": tr.value[:n_ref],
            "trace_dlscope_ci": tr.ci[:n_ref],
            "trace_reference": [r["trace"] for r in ref],
            "trace_reference_ci": [r["trace_ci"] for r in ref],
            "trace_dlscope_rel_halfwidth": [(b - a) / 2 / abs(v) for v, (a, b) in zip(tr.value, tr.ci)][:n_ref],
            "trace_reference_rel_halfwidth": ref_rel_half,
        }
        print(json.dumps(results["curvature"], indent=1), flush=True)

    if "plane" not in args.skip:
        split = data.load("cifar10", "cpu", train_size=args.plane_n).train
        torch.manual_seed(0)
        model = models.build("cnn-1")
        t0, c0 = time.perf_counter(), cpu_seconds()
        plane = analysis.loss_plane(model, (split.x, split.y), steps=args.plane_steps)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        with torch.no_grad():
            model_loss = F.cross_entropy(model.eval()(split.x), split.y).item()
        results["plane"] = {
            "images": args.plane_n,
            "steps": args.plane_steps,
            "wall_s": wall,
            "cpu_s": cpu,
            "centre_loss": float(plane.center_loss),
            "model_loss": model_loss,
        }
        print(json.dumps(results["plane"], indent=1), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
