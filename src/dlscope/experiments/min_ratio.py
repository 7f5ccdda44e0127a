"""5. min-ratio: what the loss surface looks like where the gradient is (almost) zero.

All trainings of mlp-minratio on f1 advance together as one vectorized ensemble:
  phase 1  Adam on the full-batch MSE, on the fast MLP path (engine/fast_mlp.py: flat
           parameters, hand-written backward, compiled loop);
  phase 2  Adam on the squared gradient norm ||∇L||² (an Ensemble with stacked parameters and a
           vmapped forward; double backward, each member its own);
           a member stops when ||∇L|| < grad_tol, else at the step budget, and its end point is
           the lowest-gradient point it visited.
A member counts as converged if its end gradient norm is below grad_tol or at least
`converged_factor` times smaller than where phase 2 started. At each end point, the exact Hessian
of the MSE (closed form, float64, all members at once) and its eigenvalues give the minimal ratio: the fraction
of eigenvalues > 0 (eigenvalues within eig_rel_tol·max|λ| of 0 count as zero, not positive).

Why many members do not converge (measured on the quick profile): the gradient left after phase 1
lies in directions of small curvature (|λ| ~ 1e-4..1e-2, against a top eigenvalue ~10..50), and
the curvature of ||∇L||² there is λ², so first-order minimisation barely moves it; Newton-type
steps (tried: Levenberg-Marquardt with the exact Hessian) stop where a ReLU kink meets a data
point and the gradient is discontinuous. Such end points are reported, marked not converged.
"""

from __future__ import annotations

import math

import torch

from .. import models
from ..analysis import hessian as curvature
from ..engine import BatchedAdam, Ensemble, TrainConfig, fast_mlp, loss_per_member
from .base import ConfigError, Trial, save_fig, seeds_for
from .func_fit import FUNCTIONS, inputs

NAME = "min-ratio"
# phase 1 is compiled from this many steps on: compiling costs ~7 s here, and then a step of 100
# members costs 1.7 ms instead of 45 ms eagerly (measured, quick profile's shapes)
COMPILE_MIN_STEPS = 1000
CHECKPOINT_FORMAT = 2  # phase 1 on the fast MLP path
PHASE2_CHUNK = 25  # members per double backward on a CPU (see gradient_norm_descent_grads)
TITLE = "Minimal ratio of the Hessian where the gradient is almost zero"

# --- for the report and the progress display (see base.py)
COST = 31  # seconds of the quick profile on the reference CPU; only the ratios between experiments matter
LOOK_FOR = ("how close the near-critical points are to minima (minimal ratio 1) or saddles (below 1), "
            "and whether a lower loss goes with a higher ratio (Dauphin et al. 2014 report that it does).")
CAPTIONS = {
    "min_ratio.png": "The minimal ratio (fraction of the Hessian's eigenvalues > 0) against the MSE at the end "
    "point of each training, (a) over all eigenvalues and (b) without the zero ones, coloured by the end "
    "point's gradient norm (the original's unnumbered \"Loss vs Minimal Ratio\" figure, axes swapped).",
}
REFERENCE = None  # the original published a figure, no numbers
DIFFERENCES = [
    ("Minimal ratio (experiment 5)",
     "dlscope: first trains on the MSE, then minimises the squared gradient norm until the point is "
     "near-critical, and there takes the exact Hessian of the MSE with respect to all parameters; "
     "minimal ratio = fraction of its eigenvalues that are > 0. The original: eigenvalues of a "
     "Gauss-Newton matrix, taken while training a corrupted objective.",
     "The fraction of positive eigenvalues describes a critical point only at a critical point of the "
     "loss it is computed for. A Gauss-Newton matrix JᵀJ is positive semi-definite by construction, "
     "so it cannot show the negative curvature the ratio is meant to count; the exact Hessian of these "
     "small models (385 parameters) is cheap."),
]

_FULL = {
    "model": "mlp-minratio",
    "function": "f1",
    "seeds": 100,
    "points": 300,
    "phase1_lr": 1e-4,
    "phase1_steps": 20000,
    "phase2_lr": 1e-4,
    "phase2_steps": 5000,  # lr cosine-decayed to 0 over the budget
    "grad_tol": 1e-6,
    "converged_factor": 100.0,
    "eig_rel_tol": 1e-9,
    "float64": True,  # the Hessian's small eigenvalues and the gradient tolerance need it
}
PROFILES = {
    # smoke: a loose tolerance so that both outcomes (converged or not) occur and are drawn
    "smoke": {**_FULL, "seeds": 6, "points": 40, "phase1_lr": 1e-3, "phase1_steps": 150, "phase2_steps": 60, "grad_tol": 3.2e-2},
    "quick": {**_FULL, "points": 100, "phase1_lr": 1e-3, "phase1_steps": 3000, "phase2_steps": 300},
    "full": _FULL,
}


def validate(cfg: dict) -> None:
    if cfg["function"] not in FUNCTIONS:
        raise ConfigError(f"function: {cfg['function']!r} unknown; choose from {', '.join(FUNCTIONS)}")
    if cfg["model"] not in models.names() or models.info(cfg["model"])["input_shape"] != (1,):
        raise ConfigError(f"model: {cfg['model']!r} is not a 1-D regression model of the zoo")
    if cfg["points"] < 2:
        raise ConfigError("points: need at least 2")
    if not fast_mlp.supports(cfg["model"]):
        raise ConfigError(f"model: {cfg['model']!r} is not a one-output (leaky) ReLU MLP")
    if cfg["phase2_steps"] < 0 or cfg["phase1_steps"] < 0:
        raise ConfigError("phase1_steps and phase2_steps must not be negative")


def trials(cfg: dict) -> list[Trial]:
    # one trial: the whole ensemble is one program
    return [Trial(key="ensemble", fn=train_and_measure, args=dict(cfg), label=f"{cfg['seeds']} x {cfg['model']}")]


# --------------------------------------------------------------------------- the trial


def grad_norms(ens: Ensemble, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False):
    """Full-batch MSE [N] and gradient norm [N] of every member (differentiable if create_graph)."""
    loss = loss_per_member(ens.forward_shared(x), y, "mse")
    grads = torch.autograd.grad(loss.sum(), ens.parameters(), create_graph=create_graph)  # member i: ∇ of its own loss
    return loss, torch.sqrt(sum(g.pow(2).reshape(ens.n, -1).sum(1) for g in grads))


def gradient_norm_descent_grads(ens: Ensemble, x: torch.Tensor, y: torch.Tensor, chunk: int):
    """Phase 2's gradients: ∇(||∇L||²) of every member into its parameters' .grad, computed
    `chunk` members at a time; returns the MSE [N] and gradient norm [N] where they were taken.
    Members are independent, so chunks give each member's own numbers; on a CPU, smaller
    temporaries are served from memory the allocator keeps instead of fresh pages (100 members of
    mlp-minratio at 300 points: 77 ms per step at once, 32 ms in chunks of 25; measured)."""
    losses, norms = [], []
    grads = {k: torch.empty_like(v) for k, v in ens.params.items()}
    for s in range(0, ens.n, chunk):
        part = Ensemble(ens.module, {k: v[s : s + chunk].detach().requires_grad_() for k, v in ens.params.items()},
                        {k: v[s : s + chunk] for k, v in ens.buffers.items()}, ens.mode)  # fmt: skip
        loss, gn = grad_norms(part, x, y[s : s + chunk], create_graph=True)
        gn.pow(2).sum().backward()
        for k, v in part.params.items():
            grads[k][s : s + chunk] = v.grad
        losses.append(loss.detach())
        norms.append(gn.detach())
    for k, v in ens.params.items():
        v.grad = grads[k]
    return torch.cat(losses), torch.cat(norms)


def train_and_measure(args: dict, ctx) -> dict:
    dev, dtype = ctx.device, torch.float64 if args["float64"] else torch.float32
    x = inputs(args["points"], dev).to(dtype)
    y_one = FUNCTIONS[args["function"]](x[:, 0])
    seeds = seeds_for(args, args["seeds"])
    n1, n2 = args["phase1_steps"], args["phase2_steps"]
    total = n1 + n2
    state = ctx.checkpoint.load() if ctx.checkpoint else None
    if state is not None and state.get("format") != CHECKPOINT_FORMAT:
        state = None  # written by an older dlscope, whose phase 1 kept other state: start over
    step = state["step"] if state is not None else 0

    def progress(info: str, force=False, **extra):
        if ctx.checkpoint:
            ctx.checkpoint.save({"format": CHECKPOINT_FORMAT, "step": step, **extra}, force=force)
            ctx.checkpoint.progress(step, total, info)

    # phase 1: the loss, on the fast MLP path (the same steps as Ensemble + BatchedAdam; tested)
    phase1 = fast_mlp.FastMLPTrainer(args["model"], TrainConfig(n1, args["points"], args["phase1_lr"], loss="mse"),
                                     seeds, dev, dtype, compile=n1 >= COMPILE_MIN_STEPS)  # fmt: skip
    if state is not None and "phase1" in state:
        phase1.load_state_dict(state["phase1"])
    while step < n1:
        losses = phase1.train_full_batch(x, y_one, min(fast_mlp.FULL_BATCH_CHUNK, n1 - step))
        step = phase1.epoch
        progress(f"phase 1 mse {losses[-1].mean().item():.3g}", force=step == n1, phase1=phase1.state_dict())

    # the phase-1 end points as a vectorized Ensemble for phase 2's double backward
    ens = Ensemble.from_members([phase1.member(i) for i in range(phase1.n)], dev)
    opt = BatchedAdam(ens.parameters(), args["phase2_lr"])
    if state is not None and "phase2" in state:
        ens.load_state_dict(state["ensemble"])
        opt.load_state_dict(state["opt"])

    def save(p2: dict, force=False):
        progress(f"phase 2 |g| {p2['best_gn'].median().item():.2e}", force=force, ensemble=ens.state_dict(), opt=opt.state_dict(), phase2=p2)

    # phase 2: the squared gradient norm
    y = y_one.expand(ens.n, -1)
    if state is not None and "phase2" in state:
        p2 = state["phase2"]
    else:
        loss, gn = grad_norms(ens, x, y)
        p2 = {
            "start_loss": loss.detach(), "start_gn": gn.detach(),
            "best_gn": gn.detach().clone(), "best_loss": loss.detach().clone(),
            "best": {k: v.detach().clone() for k, v in ens.params.items()},
            "done": gn.detach() < args["grad_tol"], "steps": torch.zeros(ens.n, dtype=torch.long, device=dev),
        }
    while step < total and not bool(p2["done"].all()):
        k = step - n1
        opt.zero_grad()
        loss, gn = gradient_norm_descent_grads(ens, x, y, PHASE2_CHUNK if dev.type == "cpu" else ens.n)
        with torch.no_grad():  # keep the lowest-gradient point visited (Adam on ||∇L||² is not monotone)
            better = gn < p2["best_gn"]
            p2["best_gn"] = torch.where(better, gn, p2["best_gn"])
            p2["best_loss"] = torch.where(better, loss, p2["best_loss"])
            for name, v in ens.params.items():
                p2["best"][name][better] = v[better]
            p2["done"] |= gn < args["grad_tol"]
            p2["steps"] += (~p2["done"]).long()
        # finished members stand still: their learning rate is 0 (Adam is element-wise)
        cosine = 0.5 * (1 + math.cos(math.pi * k / max(n2, 1)))
        opt.lr = torch.where(p2["done"], 0.0, args["phase2_lr"] * cosine).to(opt.lr.dtype)
        opt.step()
        step += 1
        if step % 50 == 0 or step == total:
            save(p2, force=step == total)

    # the end points: exact Hessian of the MSE at each member's lowest-gradient point, in closed
    # form for all members at once (fast_mlp.hessians: equal to torch.func's, tested)
    ens.load_state_dict({"params": p2["best"], "buffers": ens.buffers})
    theta = ens.flat().to(torch.float64)
    finite = torch.isfinite(p2["best_gn"]).cpu() & torch.isfinite(theta).all(1).cpu()
    eigs = torch.full_like(theta[:, :1].expand(-1, theta.shape[1]), float("nan"))
    if finite.any():
        sel = finite.nonzero()[:, 0].to(dev)
        H = fast_mlp.hessians(theta[sel], phase1.spec, x.to(torch.float64), y_one.to(torch.float64))
        eigs[sel] = torch.linalg.eigvalsh(H)  # ascending, per member
    eigs = eigs.cpu()
    rows = []
    for i, seed in enumerate(seeds):
        gn_end, start, ok = float(p2["best_gn"][i]), float(p2["start_gn"][i]), bool(finite[i])
        e = eigs[i]
        zero = args["eig_rel_tol"] * float(e.abs().max()) if ok else 0.0
        rows.append(
            {
                "seed": seed,
                "loss": float(p2["best_loss"][i]),
                "grad_norm": gn_end,
                "grad_norm_start": start,
                "loss_start": float(p2["start_loss"][i]),
                "phase2_steps": int(p2["steps"][i]),
                "converged": ok and (gn_end < args["grad_tol"] or gn_end * args["converged_factor"] <= start),
                "diverged": not ok,
                "min_ratio": curvature.min_ratio(e, args["eig_rel_tol"]) if ok else float("nan"),
                "n_negative": int((e < -zero).sum()) if ok else None,
                "n_zero": int((e.abs() <= zero).sum()) if ok else None,
                "eig_min": float(e[0]),
                "eig_max": float(e[-1]),
                "n_params": theta.shape[1],
            }
        )
    return {"points": rows, "end_params": ens.flat().cpu(), "param_names": list(ens.params)}  # [N, P]: each end point


# --------------------------------------------------------------------------- outputs


def summarize(cfg: dict, results: dict) -> dict:
    r = results.get("ensemble")
    if r is None:
        return {"points": []}
    pts = r["points"]
    conv = [p for p in pts if p["converged"]]
    out = {
        "points": pts,
        "converged": len(conv),
        "trainings": len(pts),
        "converged_rule": f"final |grad| < {cfg['grad_tol']:g} or <= 1/{cfg['converged_factor']:g} of its value when phase 2 started",
        "min_ratio_definition": f"fraction of Hessian eigenvalues > {cfg['eig_rel_tol']:g} * max|eigenvalue| (exact Hessian of the MSE, float64)",
    }
    if conv:
        out["converged_min_ratio_mean"] = sum(p["min_ratio"] for p in conv) / len(conv)
        out["converged_loss_median"] = sorted(p["loss"] for p in conv)[len(conv) // 2]
    return out


def metrics(cfg: dict, results: dict) -> list[dict]:
    rows = []
    for p in results.get("ensemble", {}).get("points", []):
        for m in ("loss", "grad_norm", "grad_norm_start", "min_ratio", "converged"):
            rows.append({"seed": p["seed"], "epoch": cfg["phase1_steps"] + cfg["phase2_steps"], "metric": m, "value": float(p[m])})
    return rows


def figures(cfg: dict, results: dict, fig_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    pts = [p for p in results.get("ensemble", {}).get("points", []) if not p["diverged"]]
    if not pts:
        return []
    gns = [max(p["grad_norm"], 1e-300) for p in pts]
    norm = LogNorm(vmin=min(gns), vmax=max(max(gns), min(gns) * 1.01))
    n = pts[0]["n_params"]

    def nonzero_ratio(p):  # positive / (positive + negative): the zero eigenvalues left out
        pos = round(p["min_ratio"] * n)
        return pos / max(pos + p["n_negative"], 1)

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    panels = ((axes[0], lambda p: p["min_ratio"], "minimal ratio (fraction of all eigenvalues > 0)", "(a) minimal ratio (SPEC)"),
              (axes[1], nonzero_ratio, "positive / (positive + negative) eigenvalues",
               "(b) the same without the zero eigenvalues (dead or idle units, symmetries)"))
    sc = None
    for ax, value, ylabel, title in panels:
        for conv, marker, label in ((True, "o", "converged"), (False, "x", "not converged")):
            sel = [p for p in pts if p["converged"] == conv]
            if not sel:
                continue
            sc = ax.scatter([p["loss"] for p in sel], [value(p) for p in sel], c=[max(p["grad_norm"], 1e-300) for p in sel],
                            cmap="viridis", norm=norm, marker=marker, s=40, linewidths=0.6 if conv else 1.3,
                            edgecolors="k" if conv else None, label=f"{label} ({len(sel)})")
        ax.set(xscale="log", xlabel="MSE at the end point (log scale)", ylabel=ylabel)
        ax.set_title(title, fontsize=10)
        vals = [value(p) for p in pts]
        ax.set_ylim(max(0.0, min(vals) - 0.05), min(1.0, max(vals) + 0.05) + 0.01)  # zoomed: the spread is small
        # labels at 1, 2, 5 x 10^k: matplotlib's minor labels on a narrow log axis collide
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="lower left", fontsize=8)
    fig.colorbar(sc, ax=axes, label="gradient norm at the end point (log scale)", shrink=0.9)
    fig.suptitle(f"{cfg['model']} on {cfg['function']}, {len(pts)} trainings: Hessian at the end of gradient-norm minimisation "
                 f"({n} parameters; converged: |grad| < {cfg['grad_tol']:g} or {cfg['converged_factor']:g}x below its start)", fontsize=10)
    return [save_fig(fig, fig_dir / "min_ratio.png")]
