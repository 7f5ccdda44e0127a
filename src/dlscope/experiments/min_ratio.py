"""5. min-ratio: what the loss surface looks like where the gradient is zero.

All trainings of mlp-minratio on f1 advance together, batched over members:
  phase 1  Adam on the full-batch MSE, on the fast MLP path (engine/fast_mlp.py: flat
           parameters, hand-written backward, compiled loop);
  phase 2  towards a critical point: by default the active-set method (active_set_phase: least
           squares on each piece of the loss, kinks pinned at data points); "newton-mr": Newton-MR
           with the exact Hessian (newton_phase); "adam": the original's Adam on ||∇L||². Each
           member's end point is the lowest-gradient point it visited (Clarke norm for active-set).
At each end point, the exact Hessian of the MSE (closed form, float64, all members at once) and its
eigenvalues give the minimal ratio: the fraction of eigenvalues > 0 (eigenvalues within
eig_rel_tol·max|λ| of 0 count as zero, not positive), and, without the zero ones, positive /
(positive + negative). Classes of end points:
  critical point   ||∇L|| < grad_tol (1e-8; the gradient as autograd computes it, ReLU'(0) = 0);
  kink-critical    not that, but the minimum-norm element of the Clarke subdifferential is
                   < grad_tol: some unit's kink sits exactly on a data point, where L has no
                   gradient, and 0 lies between its one-sided gradients (clarke_grad); its Hessian
                   is the smooth piece's restricted to the pinned kinks (restricted_hessians);
  gradient-flat    neither, and most of the gradient lies in H's near-null space (Frye et al. 2021);
  not converged    neither; diverged: weights not finite.

Why plain Newton-MR does not get there (measured: 0 of 100 at quick, also with 30 steps; median
||g|| 9e-4): the loss is piecewise smooth. With u_j = |a_j| w_j, v_j = |a_j| b_j, f is linear in
(u, v, c) once every pair (data point, unit) is on a fixed side of the unit's kink, so each piece of
the loss is a convex quadratic in (u, v, c). The gradient jumps by (2/n)·r_k·a_j·[x_k, 1] where unit
j's kink crosses data point k; Newton steps in θ stall there (81 of 100 plain Newton-MR end points
had a kink within 1e-8 of a data point; by chance ~0.01 would), and the landscape in θ is badly
conditioned (the gradient sits on eigenvalues 1e-6..1e-3 of λmax). The active-set method works in
(u, v, c), where Newton's step on a piece is one least-squares solve, and treats the kinks as the
active set. Two consequences: (1) with every a_j ≠ 0, θ -> (u, v, c) is a submersion, so every
smooth critical point is a minimiser of a convex piece: its Hessian in θ is J^T H_piece J, positive
semi-definite; negative eigenvalues at a smooth critical point need a unit with a_j = 0. (2) A
critical point where a kink sits on a data point is critical only in Clarke's sense; ||∇L|| < 1e-8
cannot be reached there by any method, because the gradient does not exist.

Measured (quick profile, 100 runs): the active set reaches a min-norm Clarke subgradient < 1e-8 in 98
runs (median 41 iterations; 1 gradient-flat, 1 not converged after 400); before the kinks that sit
on a data point only by accident are slid off (unpin_solved_kinks), 6 of them are smooth critical
points, after it 72 (26 keep a kink whose best ReLU'(0) lies strictly inside (0, 1): a true corner of
the loss). No critical point found has a negative eigenvalue, as (1) predicts.
"""

from __future__ import annotations

import math
import statistics

import torch

from .. import findings, models
from ..engine import BatchedAdam, Ensemble, TrainConfig, fast_mlp, loss_per_member
from .base import ConfigError, Trial, save_fig, seeds_for
from .func_fit import FUNCTIONS, inputs

NAME = "min-ratio"
# phase 1 is compiled from this many steps on: compiling costs ~7 s here, and then a step of 100
# members costs 1.7 ms instead of 45 ms eagerly (measured, quick profile's shapes)
COMPILE_MIN_STEPS = 1000
CHECKPOINT_FORMAT = 4  # phase 2: active-set Newton-MR, Newton-MR or Adam
PHASE2_CHUNK = 25  # adam: members per double backward on a CPU (see gradient_norm_descent_grads)
NEWTON_MU_START = 1e-12  # Newton-MR's damping, relative to λmax²: ~0 = the pseudo-inverse step
NEWTON_TRIES = 8  # damping values tried per iteration before a member's step counts as failed
ARMIJO = 1e-4
KINK_TOL = 1e-10  # a kink "at" a data point: within this of it, in input units (points are >= 2/299 apart)
KINK_SHIFT = 1e-6  # a kink moved off a data point goes this far (input units; points are >= 2/299 apart)
MAX_CROSSINGS = 2000  # active set: data points a line search may carry kinks across, per iteration
RELEASE_MARGIN = 1e-9  # active set: a pinned kink is released where the loss falls faster than this * |g| off it
CRITICAL_SHARE = 0.9  # the premise, as a claim: at least this share of runs end at a critical point
FLAT_SHARE = 0.5  # gradient-flat: at least this share of ||g|| in the near-null space of H
TITLE = "Minimal ratio of the Hessian where the gradient is almost zero"

# --- for the report and the progress display (see base.py)
COST = 173  # seconds of the quick profile, measured (run all, 2 idle cores, 2026-12-02); only the ratios between experiments matter
LOOK_FOR = ("first whether the end points are critical points at all (the findings critical-points-reached and "
            "kink-critical-points-reached, and panel (c): the gradient norm and the Clarke norm against the 1e-8 line). Many "
            "end points are kink-critical: a ReLU kink sits exactly on a data point, where the loss has no gradient and "
            "|grad| < 1e-8 cannot be reached by any method; they are critical in Clarke's sense (0 lies between the one-sided "
            "gradients), and their Hessian is the smooth piece's restricted to the pinned kinks. \"Lower loss, higher "
            "ratio\" is judged over the critical points of both kinds (inconclusive when there are too few). With every "
            "out-weight non-zero, a smooth critical point of this model is a minimiser of a convex piece, so its Hessian has "
            "no negative eigenvalues (see the module's docstring); zero eigenvalues (dead units: 3 each; rescaling symmetries) "
            "lower the ratio over all eigenvalues, and panel (b) leaves them out.")
CAPTIONS = {
    "min_ratio.png": "MSE at each training's end point against its minimal ratio, the original's way round (ratio on x, "
    "log loss on y): (a) the fraction of all Hessian eigenvalues > 0 (at kink-critical points: of the Hessian restricted "
    "to the pinned kinks), (b) positive among the non-zero eigenvalues; critical points (|grad| < 1e-8), kink-critical "
    "points (min-norm Clarke subgradient < 1e-8), gradient-flat and not converged end points drawn apart, n in the "
    "legends; (c) the cumulative distribution of the gradient norm after phase 1 and after phase 2, and of the Clarke "
    "norm after phase 2, with the 1e-8 line (the original's unnumbered \"Loss vs Minimal Ratio\").",
}
REFERENCE = None  # the original published a figure, no numbers
DIFFERENCES = [
    ("Minimal ratio (experiment 5)",
     "dlscope: first trains on the MSE, then goes to a critical point by an active-set method on the loss's "
     "pieces (kinks pinned at data points; Newton-MR or the original's Adam on the squared gradient norm as "
     "settings), and there takes the exact Hessian of the MSE with respect to all parameters; "
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
    "phase2": "active-set",  # Newton-MR with kinks pinned at data points; "newton-mr": plain; "adam": the original's
    "active_set_steps": 400,  # active-set iterations (a least-squares solve each); members stop when critical
    "newton_steps": 40,  # Newton-MR iterations (one exact Hessian and eigendecomposition each)
    "phase2_lr": 1e-4,  # adam only
    "phase2_steps": 5000,  # adam only; lr cosine-decayed to 0 over the budget
    "grad_tol": 1e-8,  # a critical point: ||∇L|| below this (float64)
    "eig_rel_tol": 1e-9,  # |λ| <= this * max|λ| counts as a zero eigenvalue
    "flat_rel_tol": 1e-6,  # gradient-flat: most of the gradient lies where |λ| <= this * max|λ|
    "float64": True,  # the Hessian's small eigenvalues and the gradient tolerance need it
}
PROFILES = {
    "smoke": {**_FULL, "seeds": 6, "points": 40, "phase1_lr": 1e-3, "phase1_steps": 150, "active_set_steps": 60, "newton_steps": 6, "phase2_steps": 60},
    # quick: a Newton iteration of 100 members costs ~3.5 s of CPU (the eigendecompositions)
    "quick": {**_FULL, "points": 100, "phase1_lr": 1e-3, "phase1_steps": 3000, "newton_steps": 4, "phase2_steps": 300},
    "full": _FULL,
}
PHASE2_METHODS = ("active-set", "newton-mr", "adam")
CLASSES = ("critical point", "kink-critical", "gradient-flat", "not converged", "diverged")


def validate(cfg: dict) -> None:
    if cfg["function"] not in FUNCTIONS:
        raise ConfigError(f"function: {cfg['function']!r} unknown; choose from {', '.join(FUNCTIONS)}")
    if cfg["model"] not in models.names() or models.info(cfg["model"])["input_shape"] != (1,):
        raise ConfigError(f"model: {cfg['model']!r} is not a 1-D regression model of the zoo")
    if cfg["points"] < 2:
        raise ConfigError("points: need at least 2")
    if not fast_mlp.supports(cfg["model"]):
        raise ConfigError(f"model: {cfg['model']!r} is not a one-output (leaky) ReLU MLP")
    if cfg["phase2"] not in PHASE2_METHODS:
        raise ConfigError(f"phase2: {cfg['phase2']!r} unknown; choose from {', '.join(PHASE2_METHODS)}")
    spec = fast_mlp.spec_of_model(cfg["model"])
    if cfg["phase2"] == "active-set" and (len(spec.widths) != 3 or spec.slope != 0):
        raise ConfigError(f"phase2: active-set needs a one-hidden-layer ReLU MLP; {cfg['model']!r} is not one")


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
    n1 = args["phase1_steps"]
    n2 = {"adam": args["phase2_steps"], "newton-mr": args["newton_steps"], "active-set": args["active_set_steps"]}[args["phase2"]]
    total = n1 + n2
    state = ctx.checkpoint.load() if ctx.checkpoint else None
    if state is not None and (state.get("format") != CHECKPOINT_FORMAT or state.get("phase2_method") != args["phase2"]):
        state = None  # written by an older dlscope or another phase-2 method: start over
    step = state["step"] if state is not None else 0

    def progress(step: int, info: str, force=False, **extra):
        if ctx.checkpoint:
            ctx.checkpoint.save({"format": CHECKPOINT_FORMAT, "phase2_method": args["phase2"], "step": step, **extra}, force=force)
            ctx.checkpoint.progress(step, total, info)

    # phase 1: the loss, on the fast MLP path (the same steps as Ensemble + BatchedAdam; tested)
    phase1 = fast_mlp.FastMLPTrainer(args["model"], TrainConfig(n1, args["points"], args["phase1_lr"], loss="mse"),
                                     seeds, dev, dtype, compile=n1 >= COMPILE_MIN_STEPS)  # fmt: skip
    if state is not None and "phase1" in state:
        phase1.load_state_dict(state["phase1"])
    while step < n1:
        losses = phase1.train_full_batch(x, y_one, min(fast_mlp.FULL_BATCH_CHUNK, n1 - step))
        step = phase1.epoch
        progress(step, f"phase 1 mse {losses[-1].mean().item():.3g}", force=step == n1, phase1=phase1.state_dict())

    # phase 2: towards ||∇L|| = 0; each member's end point is the lowest-gradient point it visited
    if args["phase2"] == "active-set":
        p2 = active_set_phase(args, phase1.spec, phase1.theta.detach(), x, y_one, state, step, n1,
                              lambda *a, **kw: progress(*a, phase1=phase1.state_dict(), **kw))  # fmt: skip
    elif args["phase2"] == "newton-mr":
        p2 = newton_phase(args, phase1, x, y_one, state, step, n1, progress)
    else:
        p2 = adam_phase(args, phase1, x, y_one, state, step, n1, progress)
    return measure_end_points(args, seeds, phase1.spec, p2, x, y_one)


def _lowest(p2: dict, theta: torch.Tensor, loss: torch.Tensor, gn: torch.Tensor) -> None:
    """Keep, per member, the lowest-gradient point visited so far (NaN never counts as lower)."""
    better = gn < p2["best_gn"]
    p2["best_gn"] = torch.where(better, gn, p2["best_gn"])
    p2["best_loss"] = torch.where(better, loss, p2["best_loss"])
    p2["best"][better] = theta[better]


def _start(theta: torch.Tensor, loss: torch.Tensor, gn: torch.Tensor, grad_tol: float) -> dict:
    return {"start_loss": loss.clone(), "start_gn": gn.clone(), "best_gn": gn.clone(), "best_loss": loss.clone(),
            "best": theta.clone(), "done": ~(gn >= grad_tol),  # NaN (diverged in phase 1): done, too
            "steps": torch.zeros(len(gn), dtype=torch.long, device=gn.device)}  # fmt: skip


def newton_phase(args, phase1, x, y_one, state, step, n1, progress) -> dict:
    """Newton-MR on ||∇L||² (Roosta et al. 2018), batched over members: the step solves
    min ||H p + g|| in the least-squares sense, regularised as (H² + μ λmax² I) p = -H g (μ → 0: the
    pseudo-inverse step p = -H⁺g), found from H's eigendecomposition; it is accepted if ||g||²
    falls by Armijo's rule along it (⟨Hp, g⟩ < 0: a descent direction for ||g||² unless g lies in
    H's null space), else μ grows tenfold and the step is tried again. Newton-MR converges to
    critical points of any index, saddles included (its steps need no positive curvature).
    A member stops when ||∇L|| < grad_tol; one whose step fails at every μ stays put."""
    spec, n2 = phase1.spec, args["newton_steps"]
    n = args["points"]

    def grad(theta):
        m = theta.shape[0]
        return fast_mlp.mse_and_grad(theta, spec, x.expand(m, n, 1), y_one.expand(m, n))

    if state is not None and "phase2" in state:
        p2 = state["phase2"]
    else:
        theta = phase1.theta.detach().clone()
        loss, g = grad(theta)
        p2 = _start(theta, loss, g.norm(dim=1), args["grad_tol"])
        p2["theta"] = theta
        p2["mu"] = torch.full_like(loss, NEWTON_MU_START)
    while step < n1 + n2 and not bool(p2["done"].all()):
        idx = (~p2["done"]).nonzero()[:, 0]
        theta = p2["theta"][idx]
        _, g = grad(theta)
        gn2 = g.square().sum(1)
        lam, vecs = torch.linalg.eigh(fast_mlp.hessians(theta, spec, x, y_one))
        gv = torch.einsum("mpk,mp->mk", vecs, g)  # g in H's eigenbasis
        lmax2 = lam.square().amax(1, keepdim=True)
        mu, accepted = p2["mu"][idx].clone(), torch.zeros(len(idx), dtype=torch.bool, device=g.device)
        new = theta.clone()
        for _ in range(NEWTON_TRIES):
            filt = lam / (lam.square() + mu[:, None] * lmax2)
            p = -torch.einsum("mpk,mk->mp", vecs, filt * gv)
            slope = -(filt * lam * gv.square()).sum(1)  # ⟨Hp, g⟩
            trial = theta + p
            _, g_trial = grad(trial)
            ok = ~accepted & (g_trial.square().sum(1) <= gn2 + 2 * ARMIJO * slope)
            new[ok] = trial[ok]
            accepted |= ok
            mu = torch.where(ok, mu / 10, torch.where(accepted, mu, mu * 10))
            if bool(accepted.all()):
                break
        p2["mu"][idx] = mu.clamp(NEWTON_MU_START, 1e6)
        p2["theta"][idx] = new
        loss, g = grad(new)
        gn = g.norm(dim=1)
        sub = {k: p2[k][idx] for k in ("best_gn", "best_loss", "best")}
        _lowest(sub, new, loss, gn)
        for k, v in sub.items():
            p2[k][idx] = v
        p2["steps"][idx] += 1
        p2["done"][idx] = ~(gn >= args["grad_tol"])  # reached, or NaN
        step += 1
        progress(step, f"phase 2 |g| {p2['best_gn'].median().item():.2e}, {int((p2['best_gn'] < args['grad_tol']).sum())} critical",
                 force=step == n1 + n2, phase1=phase1.state_dict(), phase2=p2)  # fmt: skip
    return p2


# --------------------------------------------------------------------------- kinks at data points
# mlp-minratio is f(x) = sum_j a_j relu(w_j x + b_j) + c; theta = [w (H), b (H), a (H), c]. Unit j's
# kink sits at x = -b_j / w_j. When it sits exactly at a data point x_k, L has no gradient there:
# the pieces on either side differ in unit j's (w_j, b_j) gradient by q_kj [x_k, 1],
# q_kj = (2/n) r_k a_j (r_k the residual at x_k); with ReLU'(0) = s in [0, 1] for that pair, every
# gradient of the Clarke subdifferential is g0 + sum_pairs s_kj q_kj [x_k, 1] (g0: s = 0 everywhere).
# Only one data point can sit at a unit's kink (unless w_j = b_j = 0), so the pairs occupy disjoint
# coordinates and the box-constrained least squares for the minimum-norm element splits into one
# clipped scalar per unit.


def _hidden(theta: torch.Tensor, spec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """w, b, a [N, H] and c [N] of a one-input, one-hidden-layer MLP (views into theta)."""
    h = spec.widths[1]
    return theta[:, :h], theta[:, h : 2 * h], theta[:, 2 * h : 3 * h], theta[:, 3 * h]


def kinks_at_points(theta: torch.Tensor, spec, x: torch.Tensor, tol: float = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(at [N, H] bool, k [N, H] long): unit j's kink -b_j/w_j lies within tol (in input units) of
    data point x[k_j]; k_j is the nearest data point either way."""
    w, b, _, _ = _hidden(theta, spec)
    dist = (x[:, 0][None, :, None] + (b / w)[:, None, :]).abs()  # [N, n, H]
    d, k = dist.nan_to_num(nan=math.inf).min(1)
    return d <= (KINK_TOL if tol is None else tol), k


def kink_gradient(theta: torch.Tensor, spec, x: torch.Tensor, y: torch.Tensor, at: torch.Tensor, k: torch.Tensor):
    """(loss [N], g0 [N, P], q [N, H]): the MSE, its gradient with ReLU'(0) = 0 at the kinks `at`
    (unit j's kink at data point k_j), and each kink's jump: the other side's gradient adds
    q_j * [x_k, 1] to (dL/dw_j, dL/db_j). Elsewhere the ordinary gradient (ReLU'(z) = [z > 0])."""
    w, b, a, c = _hidden(theta, spec)
    xs, n = x[:, 0], x.shape[0]
    z = xs[None, :, None] * w[:, None, :] + b[:, None, :]  # [N, n, H]
    kink = at[:, None, :] & (torch.arange(n, device=x.device)[None, :, None] == k[:, None, :])
    on = (z > 0) & ~kink
    h = torch.where(on, z, torch.zeros_like(z))
    d = ((h * a[:, None, :]).sum(2) + c[:, None] - y.expand(len(theta), n)) * (2.0 / n)  # dL/df_k [N, n]
    da = d[:, :, None] * a[:, None, :] * on
    loss = (d * (n / 2.0)).square().mean(1)
    g0 = torch.cat([(da * xs[None, :, None]).sum(1), da.sum(1), (d[:, :, None] * h).sum(1), d.sum(1, keepdim=True)], 1)
    q = torch.where(at, d.gather(1, k) * a, torch.zeros_like(a))
    return loss, g0, q


def _kink_multiplier(g0: torch.Tensor, q: torch.Tensor, xk: torch.Tensor, at: torch.Tensor, spec) -> torch.Tensor:
    """[N, H]: the s that makes unit j's (w_j, b_j) gradient g0_j + s q_j [x_k, 1] shortest, unclipped
    (NaN where there is no kink or no jump)."""
    w_, b_, _, _ = _hidden(g0, spec)
    den = q * (1 + xk.square())
    return torch.where(at & (den != 0), -(w_ * xk + b_) / den, torch.full_like(den, math.nan))


def clarke_grad(theta: torch.Tensor, spec, x: torch.Tensor, y: torch.Tensor, at=None, k=None):
    """(element [N, P], s [N, H]): the minimum-norm element of the Clarke subdifferential of the MSE
    at theta, with the kinks `at` (default: kinks within KINK_TOL of a data point) and its ReLU'(0)
    values s (0 where there is no kink). Where there is no kink it is the gradient."""
    if at is None:
        at, k = kinks_at_points(theta, spec, x)
    _, g0, q = kink_gradient(theta, spec, x, y, at, k)
    xk = x[:, 0][k]
    s = _kink_multiplier(g0, q, xk, at, spec).clamp(0, 1).nan_to_num(0.0)
    hdim = spec.widths[1]
    g = g0.clone()
    g[:, :hdim] += s * q * xk
    g[:, hdim : 2 * hdim] += s * q
    return g, s


def _tangent(v: torch.Tensor, nw: torch.Tensor, nb: torch.Tensor, hdim: int) -> torch.Tensor:
    """v [N, P] or [N, R, P] projected along its last dimension onto the pinned kinks' tangent space:
    unit j's (w_j, b_j) part loses its component along the unit normal (nw_j, nb_j) of the
    constraint w_j x_k + b_j = 0 (nw = nb = 0 where unit j is not pinned)."""
    if v.dim() == 3:
        nw, nb = nw[:, None, :], nb[:, None, :]
    vw, vb = v[..., :hdim], v[..., hdim : 2 * hdim]
    dot = vw * nw + vb * nb
    out = v.clone()
    out[..., :hdim] = vw - dot * nw
    out[..., hdim : 2 * hdim] = vb - dot * nb
    return out


def _normals(x: torch.Tensor, pinned: torch.Tensor, k: torch.Tensor):
    xk = x[:, 0][k]
    scale = pinned / torch.sqrt(1 + xk.square())
    return xk * scale, scale


def restricted_hessians(theta: torch.Tensor, spec, x: torch.Tensor, y: torch.Tensor, pinned: torch.Tensor, k: torch.Tensor):
    """[N, P, P]: the Hessian of the smooth piece on the pinned kinks' manifold (w_j x_k + b_j = 0 for
    each pinned unit), as Q H Q with Q the orthogonal projector onto its tangent space: one exact
    zero eigenvalue per pin (the normal direction), the rest the restricted Hessian's. It does not
    depend on the side (s) the kink is counted on: the pinned pair's terms all lie along the normal."""
    nw, nb = _normals(x, pinned, k)
    hdim = spec.widths[1]
    H = _tangent(fast_mlp.hessians(theta, spec, x, y), nw, nb, hdim)
    return _tangent(H.transpose(1, 2), nw, nb, hdim)


def line_search_through_pieces(u, v, c, du, dv, dc, sigma, side, pinned, k, xs, y):
    """The exact minimum of the loss along φ + tδ, t in [0, 1], walking through the pieces it
    crosses: on each piece the loss along the line is a convex quadratic in t (f is linear in φ
    there); where a pair (k, j) changes side, the walk goes on if the loss still falls beyond it,
    else it stops there and that kink is to be pinned. Returns (t [m], stop_at_kink [m], unit [m],
    point [m], sides after the walk [m, n, H]); at most MAX_CROSSINGS crossings per call."""
    m, hdim = u.shape
    n = xs.shape[0]
    xk = xs[None, :, None]
    own = pinned[:, None, :] & (torch.arange(n, device=xs.device)[None, :, None] == k[:, None, :])  # a pinned pair: 0 either side
    z0, dz = xk * u[:, None, :] + v[:, None, :], xk * du[:, None, :] + dv[:, None, :]
    z1 = z0 + dz
    side = side.clone()
    t_now = torch.zeros(m, dtype=u.dtype, device=u.device)
    stop = torch.zeros(m, dtype=torch.bool, device=u.device)
    unit, point = torch.zeros(m, dtype=torch.long, device=u.device), torch.zeros(m, dtype=torch.long, device=u.device)
    rows = torch.arange(m, device=u.device)  # the members still walking
    for _ in range(MAX_CROSSINGS):
        sd, sg, zr0, zr1, dzr, t = side[rows], sigma[rows, None, :], z0[rows], z1[rows], dz[rows], t_now[rows]
        on = sd & ~own[rows]
        slope = (sg * on * dzr).sum(2) + dc[rows, None]  # df_k/dt on this piece
        resid = (sg * on * (zr0 + t[:, None, None] * dzr)).sum(2) + (c[rows] + t * dc[rows])[:, None] - y
        leaves = ~pinned[rows, None, :] & torch.where(sd, zr1 <= 0, zr1 > 0)
        t_cross = torch.where(leaves, (zr0 / (zr0 - zr1)).clamp(0, 1), torch.full_like(zr0, math.inf)).flatten(1)
        t_next, where = t_cross.min(1)
        t_next = t_next.clamp_min(t)
        curv = slope.square().sum(1)
        t_min = torch.where(curv > 0, t - (resid * slope).sum(1) / curv.clamp_min(1e-300), torch.full_like(t, math.inf))
        inside = t_min <= torch.minimum(t_next, torch.ones_like(t_next))  # this piece's minimum comes first: stop there
        t_new = torch.where(inside, t_min.clamp_min(t), torch.where(torch.isfinite(t_next), t_next, torch.ones_like(t)))
        # at a crossing: does the loss still fall beyond it (the pair on its other side)?
        kk, jj = where // hdim, where % hdim
        sub = torch.arange(len(rows), device=u.device)
        r_at = resid + (t_new - t)[:, None] * slope
        flip = torch.where(sd[sub, kk, jj], -1.0, 1.0).to(u.dtype) * sg[sub, 0, jj] * dzr[sub, kk, jj]
        beyond = (r_at * slope).sum(1) + r_at[sub, kk] * flip  # (n/2) dL/dt just past it
        crossing = ~inside & torch.isfinite(t_next)
        passes, pins = crossing & (beyond < 0), crossing & ~(beyond < 0)
        t_now[rows] = t_new
        stop[rows[pins]], unit[rows[pins]], point[rows[pins]] = True, jj[pins], kk[pins]
        side[rows[passes], kk[passes], jj[passes]] = ~sd[sub[passes], kk[passes], jj[passes]]
        rows = rows[passes]
        if len(rows) == 0:
            break
    return t_now, stop, unit, point, side


def unpin_solved_kinks(theta: torch.Tensor, spec, x: torch.Tensor, y: torch.Tensor, grad_tol: float) -> torch.Tensor:
    """theta, with the kinks that sit on a data point only by accident moved off it, where that gives a
    smooth critical point. A kink whose best ReLU'(0) is 0 or 1 sits on the boundary of a piece
    that is itself solved (the gradient of that side is the min-norm Clarke element); the piece's
    least squares usually has many solutions (more (u, v, c) than independent data), so the kink can
    slide off the point into that side, KINK_SHIFT away, while f stays the same at every data point:
    the minimum-norm δ with A δ = 0 (the piece's design matrix) and δz_kj = ±KINK_SHIFT·|u_j| (kinks
    with ReLU'(0) inside (0, 1) held: δz = 0). Kept only where the result is a smooth critical point
    (|grad| < grad_tol, no kink on a data point); else the member keeps its point."""
    hdim, xs, n = spec.widths[1], x[:, 0], x.shape[0]
    at, k = kinks_at_points(theta, spec, x)
    _, g0, q = kink_gradient(theta, spec, x, y, at, k)
    at = at & (q != 0)
    s_free = _kink_multiplier(g0, q, xs[k], at, spec)
    out = theta.clone()
    for i in at.any(1).nonzero()[:, 0].tolist():
        w, b, a, c = (t[0] for t in _hidden(theta[i : i + 1], spec))
        a = torch.where(a == 0, torch.ones_like(a), a)
        scale, sigma = a.abs(), torch.where(a < 0, -1.0, 1.0).to(a.dtype)
        u, v = w * scale, b * scale
        units = at[i].nonzero()[:, 0]
        go_on = s_free[i, units] >= 0.5  # the solved side: on (ReLU'(0) = 1) or off (0); inside (0, 1): held below
        held = (s_free[i, units] > 1e-6) & (s_free[i, units] < 1 - 1e-6)
        on = (xs[:, None] * u + v) > 0
        on[k[i, units], units] = go_on & ~held
        A = torch.cat([sigma * on * xs[:, None], sigma * on, torch.ones_like(xs[:, None])], 1)  # [n, 2H + 1]
        rows = torch.zeros(len(units), 2 * hdim + 1, dtype=theta.dtype)
        rows[torch.arange(len(units)), units] = xs[k[i, units]]
        rows[torch.arange(len(units)), hdim + units] = 1.0
        target = torch.where(held, 0.0, torch.where(go_on, 1.0, -1.0)) * KINK_SHIFT * u[units].abs()
        M = torch.cat([A, rows], 0)
        rhs = torch.cat([torch.zeros(n, dtype=theta.dtype), target])
        d = torch.linalg.lstsq(M[None], rhs[None, :, None], driver="gelsd").solution[0, :, 0]
        cand = theta[i].clone()
        cand[:hdim], cand[hdim : 2 * hdim], cand[3 * hdim] = (u + d[:hdim]) / scale, (v + d[hdim : 2 * hdim]) / scale, c + d[2 * hdim]
        cand[2 * hdim : 3 * hdim] = a
        _, g = fast_mlp.mse_and_grad(cand[None], spec, x[None], y[None])
        if bool(g.norm() < grad_tol) and not bool(kinks_at_points(cand[None], spec, x)[0].any()):
            out[i] = cand
    return out


def active_set_phase(args, spec, theta0, x, y_one, state, step, n1, progress) -> dict:
    """Phase 2 as an active-set method on the pieces of the loss, batched over members.

    With u_j = |a_j| w_j, v_j = |a_j| b_j and σ_j = sign(a_j), f(x) = c + Σ_j σ_j relu(u_j x + v_j):
    on a piece (every pair (k, j) on a fixed side of unit j's kink) f is linear in φ = (u, v, c), so
    the loss is a convex quadratic there, and Newton's step in φ is the least-squares solve that
    jumps to that quadratic's minimiser (the one nearest the current point: minimum-norm step).
    The map θ -> φ is a submersion where every a_j ≠ 0, so ∇_θ L = 0 exactly where ∇_φ L = 0 (|a_j|
    is kept, w_j = u_j/|a_j|, b_j = v_j/|a_j|). One iteration:
      1. solve the least squares of the current piece, with each pinned kink held on its data point
         (v_j = -u_j x_k: unit j's columns become σ_j [x > x_k or x < x_k] (x - x_k));
      2. walk towards its solution; pre-activations are linear along the way, so the first pair to
         change side is exact: stop there and pin that kink on that data point (the loss falls all
         the way: a convex quadratic along a segment towards its minimiser);
      3. if no pair changes side, the piece is solved; a pinned kink is then released to the side
         where the loss falls (its one-sided derivative along the kink's normal is negative:
         equivalently, its best ReLU'(0) is outside [0, 1] or its jump is negative).
    A member stops when the minimum-norm element of the Clarke subdifferential (clarke_grad) is below
    grad_tol: a smooth critical point, or a kink-critical one. At the end, kinks that sit on a data
    point although the piece on one side is solved are slid off it (unpin_solved_kinks). This is a descent method: it finds
    local minima (smooth, or pinned at kinks), never saddles; but with every a_j ≠ 0 each smooth
    critical point of L is a minimiser of a convex piece, so there are no smooth saddles to find
    except through units with a_j = 0."""
    n2, hdim = args["active_set_steps"], spec.widths[1]
    xs, n = x[:, 0], x.shape[0]

    def clarke(theta):
        return clarke_grad(theta, spec, x, y_one)[0].norm(dim=1)

    if state is not None and "phase2" in state:
        p2 = state["phase2"]
    else:
        theta = theta0.clone()
        w, b, _, _ = _hidden(theta, spec)
        loss = fast_mlp.mse_and_grad(theta, spec, x.expand(len(theta), n, 1), y_one.expand(len(theta), n))[0]
        p2 = _start(theta, loss, clarke(theta), args["grad_tol"])
        p2.update(theta=theta, side=(xs[None, :, None] * w[:, None, :] + b[:, None, :]) > 0,
                  pinned=torch.zeros(len(theta), hdim, dtype=torch.bool, device=theta.device),
                  pin_k=torch.zeros(len(theta), hdim, dtype=torch.long, device=theta.device),
                  pins_made=torch.zeros_like(p2["steps"]), pins_released=torch.zeros_like(p2["steps"]))  # fmt: skip
    while step < n1 + n2 and not bool(p2["done"].all()):
        idx = (~p2["done"]).nonzero()[:, 0]
        theta, side, pinned, k = p2["theta"][idx], p2["side"][idx], p2["pinned"][idx].clone(), p2["pin_k"][idx].clone()
        w, b, a, c = _hidden(theta, spec)
        a = torch.where(a == 0, torch.ones_like(a), a)  # (u_j, v_j) needs a_j ≠ 0; f does not depend on (w_j, b_j) while a_j = 0
        scale, sigma = a.abs(), torch.where(a < 0, -1.0, 1.0).to(a.dtype)
        u, v = w * scale, b * scale
        xp = xs[k]  # each pinned unit's data point
        on = side & ~(pinned[:, None, :] & (torch.arange(n, device=x.device)[None, :, None] == k[:, None, :]))
        col_u = sigma[:, None, :] * on * torch.where(pinned[:, None, :], xs[None, :, None] - xp[:, None, :], xs[None, :, None])
        col_v = sigma[:, None, :] * on * ~pinned[:, None, :]
        A = torch.cat([col_u, col_v, torch.ones_like(col_u[:, :, :1])], 2)  # [m, n, 2H + 1]
        resid = (col_u * u[:, None, :]).sum(2) + (col_v * v[:, None, :]).sum(2) + c[:, None] - y_one
        delta = torch.linalg.lstsq(A, -resid.unsqueeze(2), driver="gelsd").solution[..., 0]  # minimum-norm step
        du, dv, dc = delta[:, :hdim], torch.where(pinned, -delta[:, :hdim] * xp, delta[:, hdim : 2 * hdim]), delta[:, 2 * hdim]
        frac, stop, jj, kk, side = line_search_through_pieces(u, v, c, du, dv, dc, sigma, side, pinned, k, xs, y_one)
        u, v, c = u + frac[:, None] * du, v + frac[:, None] * dv, c + frac * dc
        rows = stop.nonzero()[:, 0]
        pinned[rows, jj[rows]], k[rows, jj[rows]] = True, kk[rows]
        p2["pins_made"][idx[rows]] += 1
        v = torch.where(pinned, -u * xs[k], v)  # pinned kinks exactly on their data points
        new = theta.clone()
        new[:, :hdim], new[:, hdim : 2 * hdim], new[:, 2 * hdim : 3 * hdim], new[:, 3 * hdim] = u / scale, v / scale, a, c
        # a solved piece: release the pinned kinks whose one-sided derivative along their normal is negative
        solved = ~stop & pinned.any(1)
        if bool(solved.any()):
            _, g0, q = kink_gradient(new, spec, x, y_one, pinned, k)
            gw, gb, _, _ = _hidden(g0, spec)
            xk = xs[k]
            down = -(gw * xk + gb)  # d L / d(move the kink so that the pair turns off), per unit |[x_k, 1]|
            up = -down + q * (1 + xk.square())  # ... so that it turns on
            tol = RELEASE_MARGIN * g0.norm(dim=1, keepdim=True)
            go_up, go_down = pinned & (up < -tol), pinned & (down < -tol) & ~(up < -tol)
            release = (go_up | go_down) & solved[:, None]
            if bool(release.any()):
                ri, rj = release.nonzero(as_tuple=True)
                side[ri, k[ri, rj], rj] = go_up[ri, rj]
                pinned[release] = False
                p2["pins_released"][idx] += release.sum(1)
        # the pattern follows the kinks (a pinned pair keeps its last side: it is 0 there either way)
        z = xs[None, :, None] * new[:, None, :hdim] + new[:, None, hdim : 2 * hdim]
        at_kink = z.abs() <= KINK_TOL * new[:, None, :hdim].abs()
        side = torch.where(at_kink, side, z > 0)
        p2["theta"][idx], p2["side"][idx], p2["pinned"][idx], p2["pin_k"][idx] = new, side, pinned, k
        loss = fast_mlp.mse_and_grad(new, spec, x.expand(len(new), n, 1), y_one.expand(len(new), n))[0]
        cn = clarke(new)
        sub = {key: p2[key][idx] for key in ("best_gn", "best_loss", "best")}
        _lowest(sub, new, loss, cn)
        for key, val in sub.items():
            p2[key][idx] = val
        p2["steps"][idx] += 1
        p2["done"][idx] = ~(cn >= args["grad_tol"])  # reached, or NaN
        step += 1
        progress(step, f"phase 2 Clarke |g| {p2['best_gn'].median().item():.2e}, {int((p2['best_gn'] < args['grad_tol']).sum())} reached, "
                 f"{int(p2['pinned'].sum())} kinks pinned", force=step == n1 + n2, phase2=p2)  # fmt: skip
    # kinks left on a data point although their piece is solved: slide them off where that gives a smooth critical point
    # (on a copy: the checkpoint keeps the walk's own state, so a resumed run ends the same)
    return {**p2, "best": unpin_solved_kinks(p2["best"], spec, x, y_one, args["grad_tol"])}


def adam_phase(args, phase1, x, y_one, state, step, n1, progress) -> dict:
    """The original's phase 2: Adam on ||∇L||² (an Ensemble with stacked parameters and a vmapped
    forward; double backward, each member its own), lr cosine-decayed to 0 over the budget."""
    dev, n2 = x.device, args["phase2_steps"]
    ens = Ensemble.from_members([phase1.member(i) for i in range(phase1.n)], dev)
    opt = BatchedAdam(ens.parameters(), args["phase2_lr"])
    if state is not None and "phase2" in state:
        ens.load_state_dict(state["ensemble"])
        opt.load_state_dict(state["opt"])
        p2 = state["phase2"]
    else:
        loss, gn = grad_norms(ens, x, y_one.expand(ens.n, -1))
        p2 = _start(ens.flat().detach(), loss.detach(), gn.detach(), args["grad_tol"])
    y = y_one.expand(ens.n, -1)
    while step < n1 + n2 and not bool(p2["done"].all()):
        k = step - n1
        opt.zero_grad()
        loss, gn = gradient_norm_descent_grads(ens, x, y, PHASE2_CHUNK if dev.type == "cpu" else ens.n)
        with torch.no_grad():  # keep the lowest-gradient point visited (Adam on ||∇L||² is not monotone)
            _lowest(p2, ens.flat().detach(), loss, gn)
            p2["done"] |= ~(gn >= args["grad_tol"])
            p2["steps"] += (~p2["done"]).long()
        # finished members stand still: their learning rate is 0 (Adam is element-wise)
        cosine = 0.5 * (1 + math.cos(math.pi * k / max(n2, 1)))
        opt.lr = torch.where(p2["done"], 0.0, args["phase2_lr"] * cosine).to(opt.lr.dtype)
        opt.step()
        step += 1
        if step % 50 == 0 or step == n1 + n2:
            progress(step, f"phase 2 |g| {p2['best_gn'].median().item():.2e}", force=step == n1 + n2,
                     phase1=phase1.state_dict(), ensemble=ens.state_dict(), opt=opt.state_dict(), phase2=p2)  # fmt: skip
    return p2


def measure_end_points(args, seeds, spec, p2, x, y_one) -> dict:
    """At each member's end point: the exact Hessian of the MSE (closed form, float64, all members
    at once: fast_mlp.hessians, equal to torch.func's, tested), its eigenvalues and what they say.

    At a kink-critical point (no gradient, but the Clarke subdifferential holds 0) the Hessian is
    the one of the smooth piece restricted to the manifold that keeps its kinks on their data
    points (restricted_hessians: P - pins dimensions; the same whichever side each kink is counted
    on); its sign counts are those of H on that tangent space (Sylvester), so the minimal ratio
    there is positive / (P - pins). Everywhere else: the full Hessian, as computed by autograd."""
    theta = p2["best"].to(torch.float64)
    xd, yd = x.to(torch.float64), y_one.to(torch.float64)
    n = xd.shape[0]
    loss, g = fast_mlp.mse_and_grad(theta, spec, xd.expand(len(theta), n, 1), yd.expand(len(theta), n))
    gn = g.norm(dim=1)
    finite = (torch.isfinite(gn) & torch.isfinite(theta).all(1)).cpu()
    one_hidden = len(spec.widths) == 3 and spec.slope == 0 and spec.widths[0] == 1
    if one_hidden:
        at, k = kinks_at_points(theta, spec, xd)
        _, _, q = kink_gradient(theta, spec, xd, yd, at, k)
        at = at & (q != 0)  # a kink where the residual or the out-weight is 0 is no kink of L
        cg, s = clarke_grad(theta, spec, xd, yd, at, k)
        cgn = cg.norm(dim=1)
    else:
        at, k, s, cgn = torch.zeros_like(theta[:, :1], dtype=torch.bool), None, None, gn
    smooth = ~at.any(1).cpu()  # no kink on a data point: L has a gradient here
    critical = finite & (gn < args["grad_tol"]).cpu() & smooth
    kink_crit = finite & ~critical & (cgn < args["grad_tol"]).cpu()
    pins = at & kink_crit.to(at.device)[:, None]  # the Hessian is restricted at kink-critical points only
    n_pins = pins.sum(1).cpu()
    P = theta.shape[1]
    eigs = torch.full((len(theta), P), float("nan"), dtype=torch.float64)
    flat_frac = torch.full((len(theta),), float("nan"), dtype=torch.float64)
    if finite.any():
        sel = finite.nonzero()[:, 0].to(theta.device)
        if one_hidden:
            hess = restricted_hessians(theta[sel], spec, xd, yd, pins[sel], k[sel])
        else:
            hess = fast_mlp.hessians(theta[sel], spec, xd, yd)
        lam, vecs = torch.linalg.eigh(hess)
        gv = torch.einsum("mpk,mp->mk", vecs, g[sel])
        small = lam.abs() <= args["flat_rel_tol"] * lam.abs().amax(1, keepdim=True)
        # the share of the gradient in H's (near-)null space: Newton-MR's relative residual ||g + Hp|| / ||g||
        flat_frac[finite] = ((gv.square() * small).sum(1) / gv.square().sum(1).clamp_min(1e-300)).sqrt().cpu()
        eigs[finite] = lam.cpu()
    dead = dead_units(theta, spec, xd).cpu()
    rows = []
    for i, seed in enumerate(seeds):
        ok, e = bool(finite[i]), eigs[i]
        gn_i, pins_i = float(gn[i]), int(n_pins[i])
        dim = P - pins_i  # the pinned kinks' normal directions are exact zeros of Q H Q, not eigenvalues of the piece
        zero = args["eig_rel_tol"] * float(e.abs().max()) if ok else 0.0
        n_pos, n_neg, n_zero = (int((e > zero).sum()), int((e < -zero).sum()), int((e.abs() <= zero).sum()) - pins_i) if ok else (None, None, None)
        cls = ("diverged" if not ok else "critical point" if bool(critical[i]) else "kink-critical" if bool(kink_crit[i])
               else "gradient-flat" if float(flat_frac[i]) >= FLAT_SHARE else "not converged")  # fmt: skip
        kinks = [[int(j), int(k[i, j]), float(s[i, j])] for j in at[i].nonzero()[:, 0].tolist()] if one_hidden and ok else []
        rows.append(
            {
                "seed": seed,
                "loss": float(loss[i]),
                "grad_norm": gn_i,
                "clarke_grad_norm": float(cgn[i]),
                "min_ratio": n_pos / dim if ok else float("nan"),
                "min_ratio_nonzero": n_pos / max(n_pos + n_neg, 1) if ok else float("nan"),
                "converged": cls == "critical point",
                "class": cls,
                "diverged": not ok,
                "grad_null_share": float(flat_frac[i]),
                "grad_norm_start": float(p2["start_gn"][i]),
                "loss_start": float(p2["start_loss"][i]),
                "phase2_steps": int(p2["steps"][i]),
                "kinks_at_points": kinks,  # [unit, data point, ReLU'(0) of the min-norm Clarke element]
                "hessian_dim": dim,
                "n_positive": n_pos,
                "n_negative": n_neg,
                "n_zero": n_zero,
                "dead_units": int(dead[i]),
                "eig_min": float(e[0]),
                "eig_max": float(e[-1]),
                "n_params": P,
            }
        )
    return {"points": rows, "end_params": theta.cpu(), "param_names": [f"{2 * l}.{k}" for l in range(len(spec.shapes)) for k in ("weight", "bias")]}


def dead_units(theta: torch.Tensor, spec, x: torch.Tensor) -> torch.Tensor:
    """[N]: hidden units that are off (pre-activation <= 0) at every data point, per member; a dead
    unit of a ReLU MLP gives its in-weights, bias and out-weight zero rows in the Hessian."""
    h, count = x.expand(theta.shape[0], *x.shape), torch.zeros(theta.shape[0], dtype=torch.long, device=theta.device)
    for l, (w, b) in enumerate(fast_mlp._layers(theta, spec)[:-1]):
        z = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        count += (z <= 0).all(1).sum(1) if spec.slope == 0 else 0
        h = torch.where(z > 0, z, z * spec.slope)
    return count


# --------------------------------------------------------------------------- outputs


def summarize(cfg: dict, results: dict) -> dict:
    r = results.get("ensemble")
    rows = r["points"] if r is not None else []
    counts = {c: sum(p["class"] == c for p in rows) for c in CLASSES}
    out = {
        "findings": [f.as_dict() for f in claims(cfg, rows)],
        "results": rows,
        "trainings": len(rows),
        "converged": counts["critical point"],
        "kink_critical": counts["kink-critical"],
        "classes": counts,
        "phase2_method": cfg["phase2"],
        "converged_rule": f"critical point: final |grad| < {cfg['grad_tol']:g} (float64) and no ReLU kink within {KINK_TOL:g} of a data point",
        "kink_critical_rule": f"not critical, and the minimum-norm element of the Clarke subdifferential (ReLU'(0) free in [0, 1] "
        f"at each kink within {KINK_TOL:g} of a data point) < {cfg['grad_tol']:g}; the minimal ratio there counts the eigenvalues of "
        "the Hessian restricted to the pinned kinks (P - pins dimensions)",
        "gradient_flat_rule": f"not critical, and at least {FLAT_SHARE:g} of |grad| lies along Hessian eigenvectors with "
        f"|eigenvalue| <= {cfg['flat_rel_tol']:g} * max|eigenvalue| (Newton-MR's relative residual; Frye et al. 2021)",
        "min_ratio_definition": f"fraction of the Hessian's eigenvalues > {cfg['eig_rel_tol']:g} * max|eigenvalue| (exact Hessian of "
        "the MSE, float64); min_ratio_nonzero: positive / (positive + negative), the zero eigenvalues left out",
    }
    crit = [p for p in rows if p["class"] in ("critical point", "kink-critical")]
    if crit:
        out["critical_min_ratio_median"] = statistics.median(p["min_ratio"] for p in crit)
        out["critical_loss_median"] = statistics.median(p["loss"] for p in crit)
    return out


def claims(cfg: dict, rows: list[dict]) -> list[findings.Finding]:
    """The study's premise (its end points are critical points) and the original's claim (lower
    loss, higher minimal ratio), from the per-run rows of summary.json alone."""
    tol = cfg["grad_tol"]
    # smooth: no kink on a data point (rows without the field come from before kinks were looked for)
    reached = sum(1 for p in rows if p["grad_norm"] is not None and p["grad_norm"] < tol and not p.get("kinks_at_points"))
    value, ci, verdict, n = findings.at_least(reached, len(rows), CRITICAL_SHARE)
    out = [findings.Finding(
        "critical-points-reached", f"phase 2 ends at critical points: at least {CRITICAL_SHARE:.0%} of the runs reach |grad| < {tol:g}",
        "the study's premise (SPEC: the Hessian describes a critical point only at one)", verdict,
        f"fraction of runs with |grad| < {tol:g} and no kink on a data point (Wilson 95% interval)", value, ci, n,
        f"{reached} of {n} critical ({cfg['phase2']}); "
        + ", ".join(f"{sum(p['class'] == c for p in rows)} {c}" for c in CLASSES[1:]))]  # fmt: skip
    # critical in the Clarke sense: smooth critical points, and kink-critical ones (0 in the Clarke subdifferential)
    crit = [p for p in rows if p["grad_norm"] is not None and (p["grad_norm"] < tol or (p.get("clarke_grad_norm") or math.inf) < tol)]
    value, ci, verdict, n = findings.at_least(len(crit), len(rows), CRITICAL_SHARE)
    n_kink = len(crit) - reached
    out.append(findings.Finding(
        "kink-critical-points-reached", f"phase 2 ends at critical points in the Clarke sense: at least {CRITICAL_SHARE:.0%} of the runs "
        f"reach a minimum-norm Clarke subgradient < {tol:g}", "dlscope (the premise where the loss has kinks: ReLU at data points)",
        verdict, f"fraction of runs with min-norm Clarke subgradient < {tol:g} (Wilson 95% interval)", value, ci, n,
        f"{reached} smooth critical + {n_kink} kink-critical (a ReLU kink pinned at a data point; |grad| does not exist there) of {n}"))  # fmt: skip
    for ident, key, what in (("ratio-rises-as-loss-falls", "min_ratio", "minimal ratio (all eigenvalues)"),
                             ("nonzero-ratio-rises-as-loss-falls", "min_ratio_nonzero", "positive / non-zero eigenvalues")):  # fmt: skip
        # claimed: rho(loss, ratio) < 0; findings.correlation tests "rises", so it gets -ratio
        rho, ci, verdict, n = findings.correlation([p["loss"] for p in crit], [-p[key] for p in crit])
        rho = None if rho is None else -rho
        ci = None if ci is None else [-ci[1], -ci[0]]
        zeros = statistics.median(p["n_zero"] for p in crit) if crit else None
        dead = statistics.median(p["dead_units"] for p in crit) if crit else None
        note = (f"over the {n} critical points in the Clarke sense only ({reached} smooth, {n_kink} kink-critical: there the "
                "Hessian restricted to the pinned kinks)" + ("" if n >= 3 else " (too few to decide)")
                + (f"; median {zeros:g} zero eigenvalues (|λ| <= {cfg['eig_rel_tol']:g}·max|λ|) of {rows[0]['n_params']}, "
                   f"median {dead:g} dead units (3 zero eigenvalues each)" if crit else ""))  # fmt: skip
        every = [p for p in rows if not p.get("diverged") and p[key] is not None]
        rho_all, ci_all, _, n_all = findings.correlation([p["loss"] for p in every], [-p[key] for p in every])
        if rho_all is not None and ci_all is not None:
            note += f"; over all {n_all} end points, critical or not (as the original): rho {-rho_all:.2f} [{-ci_all[1]:.2f}, {-ci_all[0]:.2f}]"
        out.append(findings.Finding(
            ident, f"lower loss, higher {what}", "original (the write-up's \"Loss vs Minimal Ratio\")" if key == "min_ratio"
            else "dlscope (the original's claim without the zero eigenvalues)", verdict,
            f"Spearman's rho between end-point MSE and {what} (claimed: negative; 95% bootstrap CI over points)",
            rho, ci, n, note))  # fmt: skip
    return out


def metrics(cfg: dict, results: dict) -> list[dict]:
    rows = []
    for p in results.get("ensemble", {}).get("points", []):
        for m in ("loss", "grad_norm", "clarke_grad_norm", "grad_norm_start", "min_ratio", "min_ratio_nonzero", "converged"):
            rows.append({"seed": p["seed"], "epoch": cfg["phase1_steps"] + p["phase2_steps"], "metric": m, "value": float(p[m])})
    return rows


MARKERS = {"critical point": ("o", "tab:blue"), "kink-critical": ("^", "tab:green"), "gradient-flat": ("s", "tab:orange"), "not converged": ("x", "tab:red")}


def figures(cfg: dict, results: dict, fig_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in results.get("ensemble", {}).get("points", []) if not p["diverged"]]
    if not pts:
        return []
    n_div = len(results["ensemble"]["points"]) - len(pts)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
    panels = ((axes[0], "min_ratio", "minimal ratio (fraction of all eigenvalues > 0)", "(a) minimal ratio (SPEC)"),
              (axes[1], "min_ratio_nonzero", "positive / (positive + negative) eigenvalues",
               "(b) without the zero eigenvalues (dead units, symmetries)"))  # fmt: skip
    for ax, key, xlabel, title in panels:
        for cls, (marker, color) in MARKERS.items():
            sel = [p for p in pts if p["class"] == cls]
            if sel:
                ax.scatter([p[key] for p in sel], [max(p["loss"], 1e-300) for p in sel], marker=marker, color=color, s=30,
                           alpha=0.8, label=f"{cls} (n={len(sel)})")  # fmt: skip
        ax.set(yscale="log", xlabel=xlabel, ylabel="MSE at the end point (log scale)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best", fontsize=8, title=f"{n_div} diverged, not drawn" if n_div else None)
    # the convergence: cumulative distribution of the end points' gradient norms
    ax = axes[2]
    for label, key in (("after phase 1", "grad_norm_start"), (f"after phase 2 ({cfg['phase2']}): |grad|", "grad_norm"),
                       ("after phase 2: min-norm Clarke subgradient", "clarke_grad_norm")):  # fmt: skip
        if any(p.get(key) is None for p in pts):
            continue
        vals = sorted(max(p[key], 1e-300) for p in pts)
        ax.step(vals, [(i + 1) / len(vals) for i in range(len(vals))], where="post", label=f"{label} (n={len(vals)})")
    ax.axvline(cfg["grad_tol"], color="k", ls="--", lw=1, label=f"critical: |grad| < {cfg['grad_tol']:g}")
    ax.set(xscale="log", xlabel="gradient norm |grad L| (log scale)", ylabel="fraction of runs at or below", ylim=(0, 1.02))
    ax.set_title("(c) how far phase 2 got: CDF of the gradient norm", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{cfg['model']} on {cfg['function']}, {len(pts)} trainings: Hessian at the end points of phase 2 ({cfg['phase2']}) "
                 f"({pts[0]['n_params']} parameters)", fontsize=10)  # fmt: skip
    return [save_fig(fig, fig_dir / "min_ratio.png")]
