"""5. min-ratio: what the loss surface looks like where the gradient is zero, on two models.

mlp-minratio (1 -> 128 -> 1, ReLU, the original's model), all trainings batched over members:
  phase 1  Adam on the full-batch MSE, on the fast MLP path (engine/fast_mlp.py);
  phase 2  towards a critical point: by default the active-set method on the loss's pieces
           (analysis/critical_points.py); "newton-mr" and the original's "adam" on ||∇L||² as settings.
The ReLU loss is piecewise smooth, so its end points count as critical in Clarke's sense (the
minimum-norm subgradient < grad_tol; smooth ones, ||∇L|| < grad_tol with no kink on a data point,
shown apart). With every out-weight non-zero, each smooth critical point of this model is a
minimiser of a convex piece (f is linear in (|a_j| w_j, |a_j| b_j, c) on a piece): its Hessian has
no negative eigenvalue, so "lower loss, higher ratio" here measures flat directions (dead units,
rescalings), not how saddle-like a point is. The finding no-smooth-saddles checks that theory.

mlp-minratio-tanh (1 -> 16 -> 1, tanh, as Pennington & Bahri 2017): smooth, so saddles exist and
||∇|| < grad_tol is a plain criterion. Its objective, in both phases, is the L2-regularised MSE
    E(θ) = MSE(θ) + (λ/2)||θ||²,  λ = smooth_l2 = 1e-3 (gradient + λθ, Hessian + λI).
Why: on the plain MSE the trained runs drift towards minima at infinity (|θ| grows; a positive
definite Hessian with λmin ~ 1e-5 and ||∇L|| ~ 1e-4 that never reaches 0): there is often no
critical point near where training goes. The L2 term makes E coercive, so every critical point lies
at finite distance. The study's own trainings use weight decay 1e-4 (coupled L2, the same form);
1e-3 is ten times that, chosen by measurement (quick profile: 93 of 100 runs critical at 1e-3 after
400 Newton-MR iterations, 61 of 100 after 600 at 1e-4). So here "lower loss, fewer negative
eigenvalues" is asked of E's critical points and E's Hessian; the loss reported (and plotted) is
the MSE part alone. One consequence: near the constant fit (w = b = a = 0, c = mean y) the L2 term
outweighs the unit's curvature, so that point is a minimum of E, where on the MSE it is a degenerate
saddle. Phase 1: full-batch Adam on E; run i starts phase 2 from its weights at epoch e_i,
log-spaced over training, so that the end points spread over loss levels. Phase 2: Newton-MR with
E's exact Hessian (float64) and a non-monotone backtracking line search (critical_points.
newton_mr_ls_step), which converges to critical points of any index. There the index (the share of
negative eigenvalues) against the loss is the curve Dauphin et al. 2014 and Pennington & Bahri 2017
draw.

At each end point: the exact Hessian of the MSE (at kink-critical ReLU points: restricted to the
pinned kinks; for the tanh model, of E) and its eigenvalues; minimal ratio = the fraction > 0 (|λ| <= eig_rel_tol·max|λ|
counts as zero). Classes: critical point, kink-critical (ReLU only), gradient-flat (most of the
gradient in the Hessian's near-null space, Frye et al. 2021), not converged, diverged (weights not
finite or beyond 1e6, or a non-finite number at the end point).

Measured (2026-12-06, the 2-core development machine shared with another session; load average
about 3; numbers in the summary of each run):
  full (300 points): 5 min 14 s wall (ReLU trial 190 s, tanh 120 s). ReLU: 100 of 100
    Clarke-critical (90 smooth, 10 kink-critical), none of the 90 smooth ones with a negative
    eigenvalue. tanh: 97 of 100 reach ||∇E|| < 1e-8 (3 not converged, ||∇E|| 2e-4..2e-3), at MSE
    0.020 .. 0.087: 48 at the constant fit (MSE 0.0869; 42 of them minima of E, no negative
    eigenvalue), 49 below it (33 with negative eigenvalues, up to 15 of 49). smooth-ratio-rises-as-
    loss-falls: rho -0.34, not shown, because the constant fit is a minimum of E at the highest loss;
    over the 49 critical points below it, rho is +0.88 (not a finding: the cut is chosen after
    looking).
  quick (100 points): 46 s wall (ReLU 30 s, tanh 13 s). ReLU: 98 of 100 Clarke-critical (77
    smooth), no smooth saddle. tanh: 97 of 100 critical (30 at the constant fit, 28 of them minima;
    67 below, rho +0.92 there); smooth-ratio-rises-as-loss-falls over all 97: rho -0.06, inconclusive.
Before the L2 term and the line search (plain MSE, Newton-MR with damping only): 25 of 100 tanh runs
critical at full, 16 at quick, all on the constant fit's plateau. What stopped them: below the
plateau the trained points head for near-interpolating fits far out (|θ| growing, Hessian spanning
1e-10..1e1, ||∇L|| 1e-4..1e-3 with no critical point nearby; a trust-region Newton minimiser did no
better); and Armijo's rule on the full pseudo-inverse step cut it only by raising the damping μ.
Now the L2 term puts every critical point at finite distance, and the line search along the
pseudo-inverse direction with a non-monotone reference (critical_points.newton_mr_ls_step) reaches
it: quick profile, λ = 1e-3, 400 iterations: 63 of 100 with damping only, 93 with the line search
(window 10), 97 with window 30.
"""

from __future__ import annotations

import math
import statistics

import torch

from .. import findings, models
from ..analysis import critical_points as cp
from ..engine.grad_norm_descent import grad_norms, gradient_norm_descent_grads
from .. import engine, flat_mlp
from ..engine import BatchedAdam, Ensemble, TrainConfig, fast_mlp
from ._base import ConfigError, Trial, pyplot, save_fig, seeds_for
from ._functions import FUNCTIONS, inputs

NAME = "min-ratio"
# phase 1 is compiled from this many steps on: compiling costs ~7 s here, and then a step of 100
# members costs 1.7 ms instead of 45 ms eagerly (measured, quick profile's shapes)
COMPILE_MIN_STEPS = 1000
CHECKPOINT_FORMAT = 5  # phase 2: state of analysis.critical_points
PHASE2_CHUNK = 25  # adam: members per double backward on a CPU (see gradient_norm_descent_grads)
CRITICAL_SHARE = 0.9  # the premise, as a claim: at least this share of runs end at a critical point
SADDLE_SHARE = 0.1  # no-smooth-saddles: fewer than this share of smooth ReLU critical points have a negative eigenvalue
MIN_CRITICAL_FOR_TREND = 80  # the smooth model's loss-ratio claim is decided on at least this many critical points
FLAT_SHARE = 0.5  # gradient-flat: at least this share of ||g|| in the near-null space of H
TITLE = "Minimal ratio of the Hessian where the gradient is almost zero"

# --- for the report and the progress display (see _base.py)
COST = 17  # its share of `run all` (quick, default executor, 2 idle cores; bench/study_time.py, 2026-12-06) in seconds
LOOK_FOR = (
    "first whether the end points are critical points at all: for the ReLU model in Clarke's sense "
    "(clarke-critical-points-reached; a kink on a data point has no gradient, so |grad| < 1e-8 cannot be reached "
    "there), for the tanh model plainly (smooth-critical-points-reached; panel (d): the gradient norms against the "
    "1e-8 line). For the ReLU model, no-smooth-saddles checks the theory that its smooth critical points are minimisers "
    'of convex pieces: there "lower loss, higher ratio" (ratio-rises-as-loss-falls) counts flat directions (dead '
    "units, rescalings), not saddles. The question of the original is asked where it has an answer on the tanh model "
    "(smooth-ratio-rises-as-loss-falls, panel (c): the index, the share of negative eigenvalues, against the loss, as "
    "Dauphin et al. 2014 draw it), and only if enough runs reached a critical point; runs that did not are drawn apart. "
    "The tanh model's objective is the MSE + (smooth_l2/2)|θ|² (smooth_l2 = 1e-3, ten times the study's weight decay, "
    "chosen by measurement: on the plain MSE the runs drift towards minima at infinity and rarely reach a critical "
    "point), so its critical points, gradients and Hessians are those of that regularised objective, while the loss "
    "shown is the MSE part; the constant fit (MSE = var(y)) is then a minimum, not a saddle, and the runs started early in "
    "training end there: minima at the highest loss, which weigh against the trend (see the module docstring)."
)
CAPTIONS = {
    "min_ratio.png": "Four panels. (a) ReLU model (mlp-minratio): MSE at each end point against its minimal ratio, "
    "the original's way round "
    "(ratio on x, log loss on y): smooth critical points, kink-critical points (min-norm Clarke subgradient < 1e-8; the "
    "Hessian restricted to the pinned kinks), gradient-flat and not converged end points drawn apart, n in the legend; "
    "(b) the same for the tanh model (mlp-minratio-tanh), whose phase 2 starts from points spread over training; its "
    "objective is "
    "MSE + (λ/2)|θ|², λ = smooth_l2 (gradient, Hessian and criticality of that objective; the loss on the axis is the MSE "
    "part); (c) the "
    "tanh model's index (share of negative eigenvalues of the regularised objective's Hessian) against the MSE (Dauphin et "
    "al. 2014, Pennington & Bahri 2017); "
    "(d) the cumulative distribution of the end points' gradient norms (the Clarke norm for ReLU) with the 1e-8 line "
    '(the original\'s unnumbered "Loss vs Minimal Ratio").',
}
REFERENCE = None  # the original published a figure, no numbers
DIFFERENCES = [
    (
        "Minimal ratio (experiment 5)",
        "dlscope: trains on the MSE, then goes to a critical point (ReLU model: an active-set method on the loss's pieces, "
        "critical in Clarke's sense; a second, smooth tanh model: Newton-MR from points spread over training), and there "
        "takes the exact Hessian of the MSE with respect to all parameters; minimal ratio = fraction of its eigenvalues "
        "that are > 0. The original: eigenvalues of a Gauss-Newton matrix, taken while training a corrupted objective, on "
        "the ReLU model alone.",
        "The fraction of positive eigenvalues describes a critical point only at a critical point of the loss it is "
        "computed for; a Gauss-Newton matrix JᵀJ is positive semi-definite by construction, so it cannot show negative "
        "curvature. On the ReLU model every smooth critical point with non-zero out-weights is a minimiser of a convex "
        "piece, so its ratio measures flat directions, not saddles; the tanh model has saddles, so there the question "
        "has an answer.",
    ),
]

_FULL = {
    "model": "mlp-minratio",
    "function": "f1",
    "seeds": 100,
    "points": 300,
    "phase1_lr": 1e-4,
    "phase1_steps": 20000,
    "phase2": "active-set",  # the active set on the loss's pieces; "newton-mr": plain; "adam": the original's
    "active_set_steps": 400,  # active-set iterations (a least-squares solve each); members stop when critical
    "newton_steps": 40,  # Newton-MR iterations on the ReLU model (phase2=newton-mr)
    "phase2_lr": 1e-4,  # adam only
    "phase2_steps": 5000,  # adam only; lr cosine-decayed to 0 over the budget
    "smooth_model": "mlp-minratio-tanh",  # the second model: smooth, saddles exist
    "smooth_phase1_lr": 1e-3,
    "smooth_phase1_steps": 20000,  # run i starts phase 2 from its weights at epoch e_i, log-spaced from smooth_first_epoch
    "smooth_first_epoch": 10,
    # Newton-MR iterations (one exact Hessian and eigendecomposition each); members stop when critical
    "smooth_newton_steps": 600,
    # the smooth model's objective, both phases: MSE + (smooth_l2/2)||θ||² (coupled L2, as Adam's weight_decay); it makes
    # the objective coercive, so every critical point lies at finite distance (on the plain MSE the runs drift towards
    # minima at infinity). 1e-3, not the study's 1e-4: measured, quick profile, Newton-MR with the line search
    # (window 10): 93 of 100 critical at 1e-3 after 400 iterations, 61 of 100 at 1e-4 after 600 (39 at |g| 1e-6..1e-3)
    "smooth_l2": 1e-3,
    "grad_tol": 1e-8,  # a critical point: ||∇L|| below this (float64)
    "eig_rel_tol": 1e-9,  # |λ| <= this * max|λ| counts as a zero eigenvalue
    "flat_rel_tol": 1e-6,  # gradient-flat: most of the gradient lies where |λ| <= this * max|λ|
    "float64": True,  # the Hessian's small eigenvalues and the gradient tolerance need it
}
# --- what the settings mean (see _base.py): which measure work (the time estimate), which must be positive
WORK_SETTINGS = {"models": ("seeds",), "length": ("phase1_steps", "phase2_steps"), "data": ("points",)}
POSITIVE_SETTINGS = (
    "seeds",
    "phase1_steps",
    "phase2_steps",
    "newton_steps",
    "active_set_steps",
    "smooth_phase1_steps",
    "smooth_newton_steps",
)
NON_NEGATIVE_SETTINGS = ()
PROFILES = {
    "smoke": {
        **_FULL,
        "seeds": 6,
        "points": 40,
        "phase1_lr": 1e-3,
        "phase1_steps": 150,
        "active_set_steps": 60,
        "newton_steps": 6,
        "phase2_steps": 60,
        "smooth_phase1_lr": 1e-2,
        "smooth_phase1_steps": 200,
        "smooth_newton_steps": 30,
    },
    "quick": {
        **_FULL,
        "points": 100,
        "phase1_lr": 1e-3,
        "phase1_steps": 3000,
        "newton_steps": 4,
        "phase2_steps": 300,
        "smooth_phase1_lr": 1e-2,
        "smooth_phase1_steps": 3000,
        "smooth_newton_steps": 400,
    },
    "full": _FULL,
}
PHASE2_METHODS = ("active-set", "newton-mr", "adam")
CLASSES = ("critical point", "kink-critical", "gradient-flat", "not converged", "diverged")
MODELS = ("relu", "tanh")  # the "model_kind" of a results row


def validate(settings: dict) -> None:
    if settings["function"] not in FUNCTIONS:
        raise ConfigError(f"function: {settings['function']!r} unknown; choose from {', '.join(FUNCTIONS)}")
    if settings["points"] < 2:
        raise ConfigError("points: need at least 2")
    if settings["phase2"] not in PHASE2_METHODS:
        raise ConfigError(f"phase2: {settings['phase2']!r} unknown; choose from {', '.join(PHASE2_METHODS)}")
    spec = flat_mlp.spec_of_model(settings["model"]) if settings["model"] in models.names() else None
    if spec is None or spec.widths[0] != 1 or len(spec.widths) != 3 or spec.widths[-1] != 1 or spec.slope != 0:
        raise ConfigError(f"model: {settings['model']!r} is not a 1 -> H -> 1 ReLU MLP of the zoo")
    if not _is_one_hidden_tanh(settings["smooth_model"]):
        raise ConfigError(f"smooth_model: {settings['smooth_model']!r} is not a 1 -> H -> 1 tanh MLP of the zoo")
    if not settings["smooth_l2"] >= 0:
        raise ConfigError("smooth_l2: must be >= 0")
    if not 1 <= settings["smooth_first_epoch"] <= settings["smooth_phase1_steps"]:
        raise ConfigError("smooth_first_epoch: must lie in 1 .. smooth_phase1_steps")


def _is_one_hidden_tanh(name: str) -> bool:
    if name not in models.names():
        return False
    with torch.random.fork_rng(devices=[]):
        m = models.build(name)
    layers = list(m) if isinstance(m, torch.nn.Sequential) else []
    return (
        len(layers) == 3 and isinstance(layers[1], torch.nn.Tanh) and layers[0].in_features == 1 and layers[2].out_features == 1
    )


def trials(settings: dict) -> list[Trial]:
    # one trial per model: each ensemble is one program
    return [
        Trial(key="ensemble", fn=train_and_measure, settings=dict(settings), label=f"{settings['seeds']} x {settings['model']}"),
        Trial(
            key="smooth",
            fn=train_and_measure_smooth,
            settings=dict(settings),
            label=f"{settings['seeds']} x {settings['smooth_model']}",
        ),
    ]


# --------------------------------------------------------------------------- the ReLU model's trial


def train_and_measure(settings: dict, ctx) -> dict:
    dev, dtype = ctx.device, torch.float64 if settings["float64"] else torch.float32
    x = inputs(settings["points"], dev).to(dtype)
    y_one = FUNCTIONS[settings["function"]](x[:, 0])
    seeds = seeds_for(settings, settings["seeds"])
    n1 = settings["phase1_steps"]
    n2 = {"adam": settings["phase2_steps"], "newton-mr": settings["newton_steps"], "active-set": settings["active_set_steps"]}[
        settings["phase2"]
    ]
    total = n1 + n2
    state = ctx.checkpoint.load() if ctx.checkpoint else None
    if state is not None and (state.get("format") != CHECKPOINT_FORMAT or state.get("phase2_method") != settings["phase2"]):
        state = None  # written by an older dlscope or another phase-2 method: start over
    step = state["step"] if state is not None else 0

    def progress(step: int, info: str, force=False, **extra):
        if ctx.checkpoint:
            ctx.checkpoint.save(
                {"format": CHECKPOINT_FORMAT, "phase2_method": settings["phase2"], "step": step, **extra}, force=force
            )
            ctx.checkpoint.progress(step, total, info)

    # phase 1: the loss, on the fast MLP path (the same steps as Ensemble + BatchedAdam; tested)
    # (validate admits only a one-output ReLU MLP: engine.trainer gives the fast path's trainer)
    phase1 = engine.trainer(
        settings["model"],
        TrainConfig.from_settings(settings, "phase1_", epochs=n1, batch_size=settings["points"], loss="mse"),
        seeds,
        dev,
        dtype=dtype,
        compile=n1 >= COMPILE_MIN_STEPS,
    )
    if state is not None and "phase1" in state:
        phase1.load_state_dict(state["phase1"])
    while step < n1:
        losses = phase1.train_full_batch(x, y_one, min(fast_mlp.FULL_BATCH_CHUNK, n1 - step))
        step = phase1.epoch
        progress(step, f"phase 1 mse {losses[-1].mean().item():.3g}", force=step == n1, phase1=phase1.state_dict())

    # phase 2: towards a critical point; each member's end point is the lowest-gradient point it visited
    xd, yd = x.to(torch.float64), y_one.to(torch.float64)
    theta0 = phase1.theta.detach()
    if settings["phase2"] == "adam":
        p2 = adam_phase(settings, phase1, x, y_one, state, step, n1, progress)
        end = p2["best"]
    else:
        if settings["phase2"] == "active-set":
            start, advance = (
                lambda: cp.active_set_start(theta0, x, y_one, settings["grad_tol"]),
                lambda s: cp.active_set_step(s, x, y_one, settings["grad_tol"]),
            )
        else:
            lg, hs = (lambda t: cp.relu_mse_and_grad(t, x, y_one)), (lambda t: cp.relu_hessians(t, x, y_one))
            start, advance = (
                lambda: cp.newton_mr_start(theta0, lg, settings["grad_tol"]),
                lambda s: cp.newton_mr_step(s, lg, hs, settings["grad_tol"]),
            )
        p2 = state["phase2"] if state is not None and "phase2" in state else start()
        while step < n1 + n2 and not bool(p2["done"].all()):
            advance(p2)
            step += 1
            progress(
                step,
                f"phase 2 |g| {p2['best_gn'].median().item():.2e}, {int((p2['best_gn'] < settings['grad_tol']).sum())} reached",
                force=step == n1 + n2,
                phase1=phase1.state_dict(),
                phase2=p2,
            )
        # active set: kinks left on a data point although their piece is solved are slid off
        # (on a copy: a resumed run ends the same)
        end = cp.active_set_end_points(p2, x, y_one, settings["grad_tol"]) if settings["phase2"] == "active-set" else p2["best"]
    end = end.to(torch.float64)
    measured = cp.relu_end_points(end, xd, yd, settings["grad_tol"])
    rows = end_point_rows(settings, seeds, "relu", end, measured, p2, dead=cp.dead_units(end, xd))
    return {"points": rows, "end_params": end.cpu(), "param_names": ["0.weight", "0.bias", "2.weight", "2.bias"]}


def adam_phase(settings, phase1, x, y_one, state, step, n1, progress) -> dict:
    """The original's phase 2: Adam on ||∇L||² (an Ensemble with stacked parameters and a vmapped
    forward; double backward, each member its own), lr cosine-decayed to 0 over the budget."""
    dev, n2 = x.device, settings["phase2_steps"]
    ens = Ensemble.from_members([phase1.member(i) for i in range(phase1.n)], dev)
    opt = BatchedAdam(ens.parameters(), settings["phase2_lr"])
    if state is not None and "phase2" in state:
        ens.load_state_dict(state["ensemble"])
        opt.load_state_dict(state["opt"])
        p2 = state["phase2"]
    else:
        loss, gn = grad_norms(ens, x, y_one.expand(ens.n, -1))
        p2 = cp.descent_start(ens.flat().detach(), loss.detach(), gn.detach(), settings["grad_tol"])
    y = y_one.expand(ens.n, -1)
    while step < n1 + n2 and not bool(p2["done"].all()):
        k = step - n1
        opt.zero_grad()
        loss, gn = gradient_norm_descent_grads(ens, x, y, PHASE2_CHUNK if dev.type == "cpu" else ens.n)
        with torch.no_grad():  # keep the lowest-gradient point visited (Adam on ||∇L||² is not monotone)
            cp.keep_lowest(p2, ens.flat().detach(), loss, gn)
            p2["done"] |= ~(gn >= settings["grad_tol"])
            p2["steps"] += (~p2["done"]).long()
        # finished members stand still: their learning rate is 0 (Adam is element-wise)
        cosine = 0.5 * (1 + math.cos(math.pi * k / max(n2, 1)))
        opt.lr = torch.where(p2["done"], 0.0, settings["phase2_lr"] * cosine).to(opt.lr.dtype)
        opt.step()
        step += 1
        if step % 50 == 0 or step == n1 + n2:
            progress(
                step,
                f"phase 2 |g| {p2['best_gn'].median().item():.2e}",
                force=step == n1 + n2,
                phase1=phase1.state_dict(),
                ensemble=ens.state_dict(),
                opt=opt.state_dict(),
                phase2=p2,
            )
    return p2


# --------------------------------------------------------------------------- the tanh model's trial


def train_and_measure_smooth(settings: dict, ctx) -> dict:
    """The tanh model: Adam with each run's start point at its own log-spaced epoch, then Newton-MR
    from there, all in float64 (a few minutes at most: restarted whole if interrupted)."""
    dev = ctx.device
    x = inputs(settings["points"], dev).to(torch.float64)
    y = FUNCTIONS[settings["function"]](x[:, 0])
    seeds = seeds_for(settings, settings["seeds"])
    n1, n2 = settings["smooth_phase1_steps"], settings["smooth_newton_steps"]

    # the objective of both phases: MSE + (smooth_l2/2)||θ||² (the loss reported is the MSE)
    loss_and_grad, hessians = cp.l2_objective(
        lambda t: cp.tanh_mse_and_grad(t, x, y), lambda t: cp.tanh_hessians(t, x, y), settings["smooth_l2"]
    )

    def progress(step, info):
        if ctx.checkpoint:
            ctx.checkpoint.progress(step, n1 + n2, info)

    epochs = cp.log_spaced_epochs(settings["smooth_first_epoch"], n1, len(seeds))
    theta0 = flat_mlp.init_flat(settings["smooth_model"], seeds, dev, torch.float64)
    starts = cp.adam_snapshots(theta0, loss_and_grad, settings["smooth_phase1_lr"], epochs)
    progress(n1, "phase 1 done")
    p2 = cp.newton_mr_start(starts, loss_and_grad, settings["grad_tol"])
    p2["done"] |= ~cp.finite_rows(starts)  # diverged in phase 1: stays diverged (the L2 term would pull it back in)
    for step in range(n2):
        if bool(p2["done"].all()):
            break
        cp.newton_mr_ls_step(p2, loss_and_grad, hessians, settings["grad_tol"])
        progress(
            n1 + step + 1,
            f"phase 2 |g| {p2['best_gn'].median().item():.2e}, {int((p2['best_gn'] < settings['grad_tol']).sum())} critical",
        )
    end = p2["best"]
    rows = end_point_rows(
        settings, seeds, "tanh", end, cp.smooth_end_points(end, x, y, settings["grad_tol"], settings["smooth_l2"]), p2
    )
    for row, e in zip(rows, epochs.tolist()):
        row["start_epoch"] = e
    return {"points": rows, "end_params": end.cpu(), "param_names": ["0.weight", "0.bias", "2.weight", "2.bias"]}


# --------------------------------------------------------------------------- end points as rows


def end_point_rows(settings: dict, seeds: list[int], kind: str, theta: torch.Tensor, m: dict, p2: dict, dead=None) -> list[dict]:
    """One results row per member from the end-point measures m (cp.relu_end_points or
    cp.smooth_end_points): class, loss, gradient norms, eigenvalue counts, minimal ratios, index."""
    usable, P = m["usable"].cpu(), theta.shape[1]
    spec = {}
    if bool(usable.any()):
        sel = usable.nonzero()[:, 0].to(theta.device)
        counts = cp.spectrum_counts(
            m["hessian"][sel], m["grad"][sel], m["pins"][sel], settings["eig_rel_tol"], settings["flat_rel_tol"]
        )
        spec = {int(i): {k: v[j].item() for k, v in counts.items() if k != "eigenvalues"} for j, i in enumerate(sel.tolist())}
    rows = []
    for i, seed in enumerate(seeds):
        s = spec.get(i)
        pins = int(m["pins"][i])
        dim = P - pins  # the pinned kinks' normal directions are exact zeros of Q H Q, not eigenvalues of the piece
        row = {
            "seed": seed,
            "model_kind": kind,
            "loss": float(m["loss"][i]),
            "grad_norm": float(m["grad_norm"][i]),
            "clarke_grad_norm": float(m["clarke_norm"][i]),
            "grad_norm_start": float(p2["start_gn"][i]),
            "loss_start": float(p2["start_loss"][i]),
            "phase2_steps": int(p2["steps"][i]),
            "hessian_dim": dim,
            "n_params": P,
        }
        if s is not None:
            n_pos, n_neg = int(s["n_positive"]), int(s["n_negative"])
            row.update(
                n_positive=n_pos,
                n_negative=n_neg,
                n_zero=int(s["n_zero"]),
                eig_min=s["eig_min"],
                eig_max=s["eig_max"],
                min_ratio=n_pos / dim,
                min_ratio_nonzero=n_pos / max(n_pos + n_neg, 1),
                index=n_neg / dim,
                grad_null_share=s["null_share"],
            )
        row["diverged"] = s is None or not all(math.isfinite(v) for v in row.values() if isinstance(v, float))
        if row["diverged"]:  # issue 21: nothing non-finite enters a claim, and such a run says it diverged
            row.update(n_positive=None, n_negative=None, n_zero=None, min_ratio=None, min_ratio_nonzero=None, index=None)
        row["class"] = (
            "diverged"
            if row["diverged"]
            else "critical point"
            if bool(m["critical"][i])
            else "kink-critical"
            if bool(m["kink_critical"][i])
            else "gradient-flat"
            if row["grad_null_share"] >= FLAT_SHARE
            else "not converged"
        )
        row["converged"] = row["class"] == "critical point"
        if kind == "relu":
            row["dead_units"] = int(dead[i])
            at = m["at"][i].nonzero()[:, 0].tolist() if not row["diverged"] else []
            row["kinks_at_points"] = [[j, int(m["k"][i, j]), float(m["s"][i, j])] for j in at]  # [unit, data point, ReLU'(0)]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- outputs


def _rows(results: dict, kind: str) -> list[dict]:
    r = results.get("ensemble" if kind == "relu" else "smooth")
    return r["points"] if r is not None else []


def summarize(settings: dict, results: dict) -> dict:
    rows = _rows(results, "relu") + _rows(results, "tanh")
    out = {
        "findings": [f.as_dict() for f in claims(settings, rows)],
        "results": rows,
        "trainings": len(rows),
        "phase2_method": settings["phase2"],
    }
    for kind in MODELS:
        mine = [p for p in rows if p["model_kind"] == kind]
        out[f"classes_{kind}"] = {c: sum(p["class"] == c for p in mine) for c in CLASSES}
    out["rules"] = {
        "critical point": f"|grad| < {settings['grad_tol']:g} (float64) and no ReLU kink within {cp.KINK_TOL:g} of a data point",
        "kink-critical": "ReLU model: not critical, and the minimum-norm element of the Clarke subdifferential "
        "(ReLU'(0) free in "
        f"[0, 1] at each kink within {cp.KINK_TOL:g} of a data point) < {settings['grad_tol']:g}; the Hessian there is "
        "restricted to the pinned kinks (P - pins dimensions)",
        "gradient-flat": f"not critical, and at least {FLAT_SHARE:g} of |grad| lies along Hessian eigenvectors with |eigenvalue| "
        f"<= {settings['flat_rel_tol']:g} * max|eigenvalue| (Newton-MR's relative residual; Frye et al. 2021)",
        "diverged": f"weights not finite or beyond {cp.WEIGHT_LIMIT:g}, or a non-finite number at the end point",
        "min_ratio": f"fraction of the Hessian's eigenvalues > {settings['eig_rel_tol']:g} * max|eigenvalue| (exact Hessian "
        "of the MSE, float64); index: the fraction < -that; min_ratio_nonzero: positive / (positive + negative)",
        "tanh objective": "the tanh model's gradient, Hessian and criticality are those of MSE + "
        f"({settings['smooth_l2']:g}/2)|theta|^2 "
        "(smooth_l2, both phases); its loss column is the MSE part",
    }
    return out


def _critical(rows: list[dict], kind: str) -> list[dict]:
    ok = ("critical point", "kink-critical") if kind == "relu" else ("critical point",)
    return [p for p in rows if p["model_kind"] == kind and p["class"] in ok]


def _counts(rows: list[dict]) -> str:
    return ", ".join(f"{sum(p['class'] == c for p in rows)} {c}" for c in CLASSES if any(p["class"] == c for p in rows))


def claims(settings: dict, rows: list[dict]) -> list[findings.Finding]:
    """From the per-run rows of summary.json alone: the premise for each model (its end points are
    critical points), the theory's no-smooth-saddles on the ReLU model, and the original's claim
    (lower loss, higher minimal ratio) on both."""
    tol = settings["grad_tol"]
    relu = [p for p in rows if p["model_kind"] == "relu"]
    tanh = [p for p in rows if p["model_kind"] == "tanh"]
    smooth_relu = [p for p in relu if p["class"] == "critical point"]
    clarke = _critical(rows, "relu")
    reached = (  # the premise, per model: (id, runs that got there, claim, source, what counts, note)
        (
            "critical-points-reached",
            smooth_relu,
            f"ReLU model: at least {CRITICAL_SHARE:.0%} of the runs reach |grad| < {tol:g} (SPEC's premise, taken literally)",
            "the study's premise (SPEC: the Hessian describes a critical point only at one)",
            f"|grad| < {tol:g} and no kink on a data point",
            f"{_counts(relu)}; a kink on a data point has no gradient, so there only Clarke-criticality can be reached",
        ),
        (
            "clarke-critical-points-reached",
            clarke,
            f"ReLU model: at least {CRITICAL_SHARE:.0%} of the runs end at a Clarke-critical "
            f"point (min-norm subgradient < {tol:g})",
            "dlscope (the premise where the loss has kinks)",
            f"min-norm Clarke subgradient < {tol:g}",
            f"{len(smooth_relu)} smooth + {len(clarke) - len(smooth_relu)} kink-critical of {len(relu)} ({settings['phase2']})",
        ),
        (
            "smooth-critical-points-reached",
            _critical(rows, "tanh"),
            f"tanh model: at least {CRITICAL_SHARE:.0%} of the runs reach "
            f"|grad| < {tol:g} of MSE + ({settings['smooth_l2']:g}/2)|θ|² (Newton-MR, exact Hessian, float64)",
            "dlscope (the premise on a smooth model)",
            f"|grad| < {tol:g}",
            f"{_counts(tanh)}; phase 2 from each run's weights at a log-spaced epoch of phase 1",
        ),
    )
    out = [
        findings.Finding.from_stat(
            findings.at_least(len(got), len(tanh if ident.startswith("smooth") else relu), CRITICAL_SHARE),
            id=ident,
            claim=claim,
            source=source,
            note=note,
            statistic=f"fraction of runs with {what} (Clopper-Pearson 95%)",
        )
        for ident, got, claim, source, what, note in reached
    ]
    out.append(
        findings.Finding.from_stat(
            findings.at_most(sum(p["n_negative"] > 0 for p in smooth_relu), len(smooth_relu), SADDLE_SHARE),
            id="no-smooth-saddles",
            claim=f"ReLU model: fewer than {SADDLE_SHARE:.0%} of its smooth critical points have a negative eigenvalue (the "
            "theory says none)",
            source="theory (a smooth critical point with non-zero out-weights minimises a convex piece; module docstring)",
            statistic=f"fraction of smooth critical points with an eigenvalue < -{settings['eig_rel_tol']:g}·max|λ| "
            "(Clopper-Pearson 95%, "
            f"shown if its high end < {SADDLE_SHARE:g})",
            note=f"over the {len(smooth_relu)} smooth critical points of the ReLU model",
        )
    )
    out.append(
        _trend(
            settings,
            clarke,
            "ratio-rises-as-loss-falls",
            "ReLU model: lower loss, higher minimal ratio",
            'original (the write-up\'s "Loss vs Minimal Ratio")',
            min_n=3,
            note=f"over the {len(clarke)} Clarke-critical points ({len(smooth_relu)} smooth); with no saddles to count here, "
            "the ratio measures flat directions (dead units, rescalings), not how saddle-like a point is",
        )
    )
    crit = _critical(rows, "tanh")
    out.append(
        _trend(
            settings,
            crit,
            "smooth-ratio-rises-as-loss-falls",
            "tanh model: lower loss, higher minimal ratio (fewer negative eigenvalues)",
            "original, asked where saddles exist (Dauphin et al. 2014; Pennington & Bahri 2017)",
            min_n=MIN_CRITICAL_FOR_TREND,
            note=f"over the {len(crit)} genuine critical points (|grad| < {tol:g}) of the tanh model's objective, "
            f"MSE + ({settings['smooth_l2']:g}/2)|θ|²; loss = the MSE part",
        )
    )
    return out


def _trend(settings, crit: list[dict], ident: str, claim: str, source: str, min_n: int, note: str) -> findings.Finding:
    """ "Lower loss, higher ratio" over the critical points crit: Spearman's rho of (-loss, ratio).
    With fewer than min_n points it is not decided: the statistic is computed over no points (so
    that its verdict, inconclusive, is the one its sample gives) and the rho over the few is told
    in the note."""
    x, y = [-p["loss"] for p in crit], [p["min_ratio"] for p in crit]
    stat = findings.correlation(x, y) if len(crit) >= min_n else findings.correlation([], [])
    if crit:
        note += (
            f"; median {statistics.median(p['n_zero'] for p in crit):g} zero and "
            f"{statistics.median(p['n_negative'] for p in crit):g} negative eigenvalues of {crit[0]['n_params']}"
        )
    if len(crit) < min_n:
        few = findings.correlation(x, y)
        told = f": rho {few.value:.2f} over them" if few.value is not None else ""
        note += f"; only {len(crit)} critical points{told}, fewer than the {min_n} this claim is decided on"
    f = findings.Finding.from_stat(
        stat,
        id=ident,
        claim=claim,
        source=source,
        note=note,
        statistic="Spearman's rho between -MSE and the minimal ratio at the critical points (claimed positive)",
    )
    if len(crit) < min_n:
        f.note, f.n = note, len(crit)  # the note says why; not the empty sample's "fewer than 4 runs"
    return f


def metrics(settings: dict, results: dict) -> list[dict]:
    rows = []
    for kind in MODELS:
        steps = settings["phase1_steps"] if kind == "relu" else settings["smooth_phase1_steps"]
        for p in _rows(results, kind):
            for m in ("loss", "grad_norm", "clarke_grad_norm", "grad_norm_start", "min_ratio", "index", "converged"):
                value = p.get(m)
                rows.append(
                    {
                        "model": kind,
                        "seed": p["seed"],
                        "epoch": steps + p["phase2_steps"],
                        "metric": m,
                        "value": float("nan") if value is None else float(value),
                    }
                )
    return rows


MARKERS = {
    "critical point": ("o", "tab:blue"),
    "kink-critical": ("^", "tab:green"),
    "gradient-flat": ("s", "tab:orange"),
    "not converged": ("x", "tab:red"),
}


def _scatter(ax, pts, key, xlabel, title):
    for cls, (marker, color) in MARKERS.items():
        sel = [p for p in pts if p["class"] == cls]
        if sel:
            ax.scatter(
                [p[key] for p in sel],
                [max(p["loss"], 1e-300) for p in sel],
                marker=marker,
                color=color,
                s=30,
                alpha=0.8,
                label=f"{cls} (n={len(sel)})",
            )
    ax.set(yscale="log", xlabel=xlabel, ylabel="MSE at the end point (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if pts:
        ax.legend(loc="best", fontsize=8)


def figures(settings: dict, results: dict, fig_dir) -> list[str]:
    plt = pyplot()

    relu = [p for p in _rows(results, "relu") if not p["diverged"]]
    tanh = [p for p in _rows(results, "tanh") if not p["diverged"]]
    if not relu and not tanh:
        return []
    fig, axes = plt.subplots(1, 4, figsize=(22, 5), layout="constrained")
    _scatter(axes[0], relu, "min_ratio", "minimal ratio (fraction of eigenvalues > 0)", f"(a) {settings['model']} (ReLU)")
    _scatter(axes[1], tanh, "min_ratio", "minimal ratio (fraction of eigenvalues > 0)", f"(b) {settings['smooth_model']} (tanh)")
    crit = [p for p in tanh if p["class"] == "critical point"]
    ax = axes[2]
    ax.scatter(
        [p["loss"] for p in crit], [p["index"] for p in crit], color="tab:blue", s=30, label=f"critical points (n={len(crit)})"
    )
    spread = [p["loss"] for p in crit]
    wide = bool(spread) and max(spread) > 10 * min(spread) > 0  # a log axis over a narrow range has no readable ticks
    ax.set(xscale="log" if wide else "linear", xlabel="MSE at the critical point", ylabel="index: fraction of eigenvalues < 0")
    ax.set_title(f"(c) {settings['smooth_model']}: index against loss (Dauphin et al. 2014)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    ax = axes[3]
    for label, pts, key in (
        (f"{settings['model']}: min-norm Clarke subgradient", relu, "clarke_grad_norm"),
        (f"{settings['model']}: after phase 1", relu, "grad_norm_start"),
        (f"{settings['smooth_model']}: |grad|", tanh, "grad_norm"),
        (f"{settings['smooth_model']}: at the start of phase 2", tanh, "grad_norm_start"),
    ):
        if pts:
            vals = sorted(max(p[key], 1e-300) for p in pts)
            ax.step(vals, [(i + 1) / len(vals) for i in range(len(vals))], where="post", label=f"{label} (n={len(vals)})")
    ax.axvline(settings["grad_tol"], color="k", ls="--", lw=1, label=f"critical: < {settings['grad_tol']:g}")
    ax.set(xscale="log", xlabel="gradient norm (log scale)", ylabel="fraction of runs at or below", ylim=(0, 1.02))
    ax.set_title("(d) how far phase 2 got", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=8)
    n_div = len(_rows(results, "relu")) + len(_rows(results, "tanh")) - len(relu) - len(tanh)
    fig.suptitle(
        f"Hessian at the end points of phase 2 on {settings['function']}"
        + (f" ({n_div} diverged runs not drawn)" if n_div else ""),
        fontsize=10,
    )
    return [save_fig(fig, fig_dir / "min_ratio.png")]
