"""Finding critical points of small regression MLPs, and what the Hessian says there.

Two kinds of model, batched over members (theta [N, P], one row per member):

  one-hidden-layer ReLU, f(x) = sum_j a_j relu(w_j x + b_j) + c (mlp-minratio): the loss is
      piecewise smooth. Critical points are taken in Clarke's sense (clarke_grad: the minimum-norm
      element of the subdifferential where a unit's kink sits on a data point), found by an active
      set method on the loss's pieces (active_set_start / active_set_step / active_set_end_points);
      at a point with pinned kinks the Hessian is the smooth piece's restricted to them
      (restricted_hessians).
  one-hidden-layer tanh (mlp-minratio-tanh): smooth. tanh_mse_and_grad and tanh_hessians (closed
      form, exact), optionally with an L2 term (l2_objective), found by Newton-MR (newton_mr_start /
      newton_mr_ls_step: with a non-monotone backtracking line search), which converges to critical
      points of any index, saddles included.

At an end point, spectrum_counts and gradient_null_share turn the Hessian into the numbers the
min-ratio experiment reports (positive, negative, zero eigenvalues; how much of the gradient lies
in the near-null space: Frye et al. 2021's gradient-flat points). The parameter layout of both
models is the zoo's module order: theta = [w (H), b (H), a (H), c].
"""

from __future__ import annotations

import math

import torch

from .. import flat_mlp

KINK_TOL = 1e-10  # a kink "at" a data point: within this of it, in input units (points are >= 2/299 apart)
KINK_SHIFT = 1e-6  # a kink moved off a data point goes this far (input units; points are >= 2/299 apart)
MAX_CROSSINGS = 2000  # active set: data points a line search may carry kinks across, per iteration
RELEASE_MARGIN = 1e-9  # active set: a pinned kink is released where the loss falls faster than this * |g| off it
NEWTON_MU_START = 1e-12  # Newton-MR's damping, relative to λmax²: ~0 = the pseudo-inverse step
NEWTON_TRIES = 8  # damping values tried per iteration before a member's step counts as failed
ARMIJO = 1e-4


def hidden_parts(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """w, b, a [N, H] and c [N] of a one-input, one-hidden-layer, one-output MLP (views into theta,
    P = 3H + 1)."""
    h = (theta.shape[1] - 1) // 3
    return theta[:, :h], theta[:, h : 2 * h], theta[:, 2 * h : 3 * h], theta[:, 3 * h]


# --------------------------------------------------------------------------- the smooth model (tanh)


def tanh_mse_and_grad(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss [N], grad [N, P]) of f(x) = sum_j a_j tanh(w_j x + b_j) + c on x [n, 1], y [n]."""
    w, b, a, c = hidden_parts(theta)
    xs = x[:, 0]
    t = torch.tanh(xs[None, :, None] * w[:, None, :] + b[:, None, :])  # [N, n, H]
    r = (t * a[:, None, :]).sum(2) + c[:, None] - y
    d = r * (2.0 / len(xs))  # dL/df_k
    da_s = d[:, :, None] * a[:, None, :] * (1 - t * t)  # dL/dz_kj
    grad = torch.cat([(da_s * xs[None, :, None]).sum(1), da_s.sum(1), (d[:, :, None] * t).sum(1), d.sum(1, keepdim=True)], 1)
    return r.square().mean(1), grad


def tanh_hessians(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[N, P, P]: the exact Hessian of the MSE of the tanh model, (2/n) JᵀJ + sum_k dL/df_k ∇²f_k.
    ∇²f_k is block-diagonal over units: with t = tanh(z), s = 1 - t², s' = -2ts, unit j's
    (w_j, b_j, a_j) block is [[a s' x², a s' x, s x], [a s' x, a s', s], [s x, s, 0]]."""
    w, b, a, c = hidden_parts(theta)
    xs, n, h = x[:, 0], x.shape[0], w.shape[1]
    t = torch.tanh(xs[None, :, None] * w[:, None, :] + b[:, None, :])
    s = 1 - t * t
    d = ((t * a[:, None, :]).sum(2) + c[:, None] - y) * (2.0 / n)
    X = xs[None, :, None]
    J = torch.cat([a[:, None, :] * s * X, a[:, None, :] * s, t, torch.ones_like(t[:, :, :1])], 2)  # [N, n, P]
    H = torch.bmm(J.transpose(1, 2), J) * (2.0 / n)
    curv = d[:, :, None] * a[:, None, :] * (-2 * t * s)  # dL/df_k * a_j * s'
    slope = d[:, :, None] * s
    idx = torch.arange(h, device=theta.device)
    wi, bi, ai = idx, h + idx, 2 * h + idx
    for (i, j), v in (
        ((wi, wi), (curv * X * X).sum(1)),
        ((wi, bi), (curv * X).sum(1)),
        ((bi, bi), curv.sum(1)),
        ((wi, ai), (slope * X).sum(1)),
        ((bi, ai), slope.sum(1)),
    ):
        H[:, i, j] += v
        if not torch.equal(i, j):
            H[:, j, i] += v
    return H


# --------------------------------------------------------------------------- Newton-MR (any smooth loss)


def newton_mr_start(theta: torch.Tensor, loss_and_grad, grad_tol: float) -> dict:
    """The state of Newton-MR from theta [N, P]: the iterate, damping, and per member the
    lowest-gradient point visited (its end point)."""
    loss, g = loss_and_grad(theta)
    state = descent_start(theta, loss, g.norm(dim=1), grad_tol)
    state.update(theta=theta.clone(), mu=torch.full_like(loss, NEWTON_MU_START))
    return state


def newton_mr_step(state: dict, loss_and_grad, hessians, grad_tol: float) -> None:
    """One Newton-MR iteration on ||∇L||² (Roosta et al. 2018) for the members not yet done, in place.

    The step solves min ||H p + g|| in the least-squares sense, regularised as
    (H² + μ λmax² I) p = -H g (μ → 0: the pseudo-inverse step p = -H⁺g), from H's
    eigendecomposition; it is accepted if ||g||² falls by Armijo's rule along it, else μ grows
    tenfold and the step is tried again. Its steps need no positive curvature, so it converges to
    critical points of any index, saddles included. A member stops when ||∇L|| < grad_tol; one
    whose step fails at every μ stays put. loss_and_grad(theta) -> (loss [m], grad [m, P]),
    hessians(theta) -> [m, P, P]."""
    idx = (~state["done"]).nonzero()[:, 0]
    theta = state["theta"][idx]
    _, g = loss_and_grad(theta)
    gn2 = g.square().sum(1)
    lam, vecs = torch.linalg.eigh(hessians(theta))
    gv = torch.einsum("mpk,mp->mk", vecs, g)  # g in H's eigenbasis
    lmax2 = lam.square().amax(1, keepdim=True)
    mu, accepted = state["mu"][idx].clone(), torch.zeros(len(idx), dtype=torch.bool, device=g.device)
    new = theta.clone()
    for _ in range(NEWTON_TRIES):
        filt = lam / (lam.square() + mu[:, None] * lmax2)
        p = -torch.einsum("mpk,mk->mp", vecs, filt * gv)
        slope = -(filt * lam * gv.square()).sum(1)  # ⟨Hp, g⟩
        trial = theta + p
        _, g_trial = loss_and_grad(trial)
        ok = ~accepted & (g_trial.square().sum(1) <= gn2 + 2 * ARMIJO * slope)
        new[ok] = trial[ok]
        accepted |= ok
        mu = torch.where(ok, mu / 10, torch.where(accepted, mu, mu * 10))
        if bool(accepted.all()):
            break
    state["mu"][idx] = mu.clamp(NEWTON_MU_START, 1e6)
    state["theta"][idx] = new
    loss, g = loss_and_grad(new)
    _record(state, idx, new, loss, g.norm(dim=1), grad_tol)


NEWTON_LS_HALVINGS = 12  # Newton-MR with a line search: step lengths 1, 1/2, ..., 2^-12 tried before μ grows
NEWTON_NONMONOTONE = 30  # ... and ||∇L||² need only fall below the largest of this many recent values (quick profile, 400
# iterations: 81 of 100 tanh runs critical with 1 (monotone), 93 with 10, 97 with 30, 95 with 100; restarting a member
# from its lowest point after 60 or 150 iterations without progress: 91, 95 (window 30); measured)


def l2_objective(loss_and_grad, hessians, lam: float):
    """(loss_and_grad, hessians) of L(θ) + (λ/2)||θ||²: gradient + λθ, Hessian + λI. The loss returned
    is L's alone (the penalty is not part of the reported loss)."""

    if lam == 0:
        return loss_and_grad, hessians

    def lg(theta):
        loss, g = loss_and_grad(theta)
        return loss, g + lam * theta

    def hs(theta):
        return hessians(theta) + lam * torch.eye(theta.shape[1], dtype=theta.dtype, device=theta.device)

    return lg, hs


def newton_mr_ls_step(state: dict, loss_and_grad, hessians, grad_tol: float) -> None:
    """One Newton-MR iteration with a backtracking line search (Roosta et al. 2018's globalisation),
    for the members not yet done, in place.

    The direction is newton_mr_step's, p(μ) = -(H² + μ λmax² I)⁻¹ H g; along it the step lengths
    α = 1, 1/2, ..., 2^-NEWTON_LS_HALVINGS are tried (all at once) and the longest that passes
    Armijo's rule on ||∇L||² is taken, against a non-monotone reference: the largest ||∇L||² of the
    member's last NEWTON_NONMONOTONE iterates (Grippo et al. 1986), so that a member may cross a
    ridge of ||∇L||² on its way to a critical point. Only if no α passes does μ grow tenfold (and
    the line search is tried again); a full step (α = 1) shrinks μ tenfold, down to NEWTON_MU_START.
    ⟨H p, g⟩ ≤ 0 for every μ, so p is a descent direction of ||∇L||² wherever g is not in H's null
    space. A member stops when ||∇L|| < grad_tol; one whose step fails at every μ stays put and
    starts the next iteration from μ = NEWTON_MU_START again."""
    idx = (~state["done"]).nonzero()[:, 0]
    theta = state["theta"][idx]
    _, g = loss_and_grad(theta)
    gn2 = g.square().sum(1)
    if "recent_gn2" not in state:
        state["recent_gn2"] = torch.full(
            (len(state["theta"]), NEWTON_NONMONOTONE), math.nan, dtype=theta.dtype, device=theta.device
        )
    recent = state["recent_gn2"][idx]
    recent = torch.cat([recent[:, 1:], gn2[:, None]], 1)
    ref = recent.nan_to_num(nan=-math.inf).amax(1)
    lam, vecs = torch.linalg.eigh(hessians(theta))
    gv = torch.einsum("mpk,mp->mk", vecs, g)
    lmax2 = lam.square().amax(1, keepdim=True)
    alphas = 0.5 ** torch.arange(NEWTON_LS_HALVINGS + 1, dtype=theta.dtype, device=theta.device)  # [K]
    m, K, P = len(idx), len(alphas), theta.shape[1]
    mu, accepted = state["mu"][idx].clone(), torch.zeros(m, dtype=torch.bool, device=g.device)
    new = theta.clone()
    for _ in range(NEWTON_TRIES):
        todo = (~accepted).nonzero()[:, 0]
        if len(todo) == 0:
            break
        filt = lam[todo] / (lam[todo].square() + mu[todo, None] * lmax2[todo])
        p = -torch.einsum("mpk,mk->mp", vecs[todo], filt * gv[todo])
        slope = -(filt * lam[todo] * gv[todo].square()).sum(1)  # ⟨Hp, g⟩ <= 0
        trial = theta[todo, None, :] + alphas[None, :, None] * p[:, None, :]  # [t, K, P]
        _, g_trial = loss_and_grad(trial.reshape(-1, P))
        gt2 = g_trial.square().sum(1).reshape(len(todo), K)
        ok = (gt2 <= ref[todo, None] + 2 * ARMIJO * alphas[None, :] * slope[:, None]) & torch.isfinite(gt2)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full_like(todo, -1))  # the longest step that passes
        hit = first >= 0
        rows = todo[hit]
        new[rows] = trial[hit, first[hit]]
        accepted[rows] = True
        mu[rows] = torch.where(first[hit] == 0, mu[rows] / 10, mu[rows])
        mu[todo[~hit]] *= 10
    mu = torch.where(accepted, mu, torch.full_like(mu, NEWTON_MU_START))  # failed at every μ: start afresh next time
    state["mu"][idx] = mu.clamp(NEWTON_MU_START, 1e6)
    state["recent_gn2"][idx] = recent
    state["theta"][idx] = new
    loss, g = loss_and_grad(new)
    _record(state, idx, new, loss, g.norm(dim=1), grad_tol)


def _record(state: dict, idx: torch.Tensor, theta: torch.Tensor, loss: torch.Tensor, gn: torch.Tensor, grad_tol: float) -> None:
    """After an iteration of the members idx: keep each one's lowest-gradient point, count the step,
    and stop the members that reached grad_tol (or NaN)."""
    sub = {k: state[k][idx] for k in ("best_gn", "best_loss", "best")}
    keep_lowest(sub, theta, loss, gn)
    for k, v in sub.items():
        state[k][idx] = v
    state["steps"][idx] += 1
    state["done"][idx] = ~(gn >= grad_tol)  # reached, or NaN


def keep_lowest(p2: dict, theta: torch.Tensor, loss: torch.Tensor, gn: torch.Tensor) -> None:
    """Keep, per member, the lowest-gradient point visited so far (NaN never counts as lower)."""
    better = gn < p2["best_gn"]
    p2["best_gn"] = torch.where(better, gn, p2["best_gn"])
    p2["best_loss"] = torch.where(better, loss, p2["best_loss"])
    p2["best"][better] = theta[better]


def descent_start(theta: torch.Tensor, loss: torch.Tensor, gn: torch.Tensor, grad_tol: float) -> dict:
    return {
        "start_loss": loss.clone(),
        "start_gn": gn.clone(),
        "best_gn": gn.clone(),
        "best_loss": loss.clone(),
        "best": theta.clone(),
        "done": ~(gn >= grad_tol),  # NaN (diverged in phase 1): done, too
        "steps": torch.zeros(len(gn), dtype=torch.long, device=gn.device),
    }


# --------------------------------------------------------------------------- kinks at data points
# mlp-minratio is f(x) = sum_j a_j relu(w_j x + b_j) + c; theta = [w (H), b (H), a (H), c]. Unit j's
# kink sits at x = -b_j / w_j. When it sits exactly at a data point x_k, L has no gradient there:
# the pieces on either side differ in unit j's (w_j, b_j) gradient by q_kj [x_k, 1],
# q_kj = (2/n) r_k a_j (r_k the residual at x_k); with ReLU'(0) = s in [0, 1] for that pair, every
# gradient of the Clarke subdifferential is g0 + sum_pairs s_kj q_kj [x_k, 1] (g0: s = 0 everywhere).
# Only one data point can sit at a unit's kink (unless w_j = b_j = 0), so the pairs occupy disjoint
# coordinates and the box-constrained least squares for the minimum-norm element splits into one
# clipped scalar per unit.


def kinks_at_points(theta: torch.Tensor, x: torch.Tensor, tol: float = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(at [N, H] bool, k [N, H] long): unit j's kink -b_j/w_j lies within tol (in input units) of
    data point x[k_j]; k_j is the nearest data point either way."""
    w, b, _, _ = hidden_parts(theta)
    dist = (x[:, 0][None, :, None] + (b / w)[:, None, :]).abs()  # [N, n, H]
    d, k = dist.nan_to_num(nan=math.inf).min(1)
    return d <= (KINK_TOL if tol is None else tol), k


def kink_gradient(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, at: torch.Tensor, k: torch.Tensor):
    """(loss [N], g0 [N, P], q [N, H]): the MSE, its gradient with ReLU'(0) = 0 at the kinks `at`
    (unit j's kink at data point k_j), and each kink's jump: the other side's gradient adds
    q_j * [x_k, 1] to (dL/dw_j, dL/db_j). Elsewhere the ordinary gradient (ReLU'(z) = [z > 0])."""
    w, b, a, c = hidden_parts(theta)
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


def kink_multiplier(g0: torch.Tensor, q: torch.Tensor, xk: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """[N, H]: the s that makes unit j's (w_j, b_j) gradient g0_j + s q_j [x_k, 1] shortest, unclipped
    (NaN where there is no kink or no jump)."""
    w_, b_, _, _ = hidden_parts(g0)
    den = q * (1 + xk.square())
    return torch.where(at & (den != 0), -(w_ * xk + b_) / den, torch.full_like(den, math.nan))


def clarke_grad(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, at=None, k=None):
    """(element [N, P], s [N, H]): the minimum-norm element of the Clarke subdifferential of the MSE
    at theta, with the kinks `at` (default: kinks within KINK_TOL of a data point) and its ReLU'(0)
    values s (0 where there is no kink). Where there is no kink it is the gradient."""
    if at is None:
        at, k = kinks_at_points(theta, x)
    _, g0, q = kink_gradient(theta, x, y, at, k)
    xk = x[:, 0][k]
    s = kink_multiplier(g0, q, xk, at).clamp(0, 1).nan_to_num(0.0)
    hdim = (theta.shape[1] - 1) // 3
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


def restricted_hessians(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, pinned: torch.Tensor, k: torch.Tensor):
    """[N, P, P]: the Hessian of the smooth piece on the pinned kinks' manifold (w_j x_k + b_j = 0 for
    each pinned unit), as Q H Q with Q the orthogonal projector onto its tangent space: one exact
    zero eigenvalue per pin (the normal direction), the rest the restricted Hessian's. It does not
    depend on the side (s) the kink is counted on: the pinned pair's terms all lie along the normal."""
    nw, nb = _normals(x, pinned, k)
    hdim = (theta.shape[1] - 1) // 3
    H = _tangent(relu_hessians(theta, x, y), nw, nb, hdim)
    return _tangent(H.transpose(1, 2), nw, nb, hdim)


def line_search_through_pieces(u, v, c, du, dv, dc, sigma, side, pinned, k, xs, y):
    """The exact minimum of the loss along φ + tδ, t in [0, 1], walking through the pieces it
    crosses: on each piece the loss along the line is a convex quadratic in t (f is linear in φ
    there); where a pair (k, j) changes side, the walk goes on if the loss still falls beyond it,
    else it stops there and that kink is to be pinned. Returns (t [m], stop_at_kink [m], unit [m],
    point [m], sides after the walk [m, n, H]); at most MAX_CROSSINGS crossings per call.

    Pre-activations are linear in t, so each pair crosses at most once, at a time known in
    advance: the crossings are sorted once, and the walk keeps the residuals as r_k(t) = α_k + t s_k
    and (n/2) dL/dt = P + t S2 (P = Σ α_k s_k, S2 = Σ s_k²), so a crossing costs O(1) per member
    (a crossing at point k changes s_k alone) instead of a pass over all pairs."""
    m, hdim = u.shape
    n = xs.shape[0]
    rows = torch.arange(m, device=u.device)
    xk = xs[None, :, None]
    own = pinned[:, None, :] & (torch.arange(n, device=xs.device)[None, :, None] == k[:, None, :])  # a pinned pair: 0 either side
    z0, dz = xk * u[:, None, :] + v[:, None, :], xk * du[:, None, :] + dv[:, None, :]
    z1 = z0 + dz
    on = side & ~own
    slope = (sigma[:, None, :] * on * dz).sum(2) + dc[:, None]  # s_k: df_k/dt on this piece
    alpha = (sigma[:, None, :] * on * z0).sum(2) + c[:, None] - y  # r_k(0)
    P, S2 = (alpha * slope).sum(1), slope.square().sum(1)
    leaves = ~pinned[:, None, :] & torch.where(side, z1 <= 0, z1 > 0)
    t_cross = torch.where(leaves, (z0 / (z0 - z1)).clamp(0, 1), torch.full_like(z0, math.inf)).flatten(1)
    t_sorted, order = t_cross.sort(1)
    passed = torch.zeros_like(leaves.flatten(1))
    t_now = torch.zeros(m, dtype=u.dtype, device=u.device)
    walking = torch.ones(m, dtype=torch.bool, device=u.device)
    stop = torch.zeros_like(walking)
    unit, point = torch.zeros(m, dtype=torch.long, device=u.device), torch.zeros(m, dtype=torch.long, device=u.device)
    for e in range(min(MAX_CROSSINGS, t_sorted.shape[1])):
        t_e = t_sorted[:, e]
        t_min = torch.where(S2 > 0, -P / S2.clamp_min(1e-300), torch.full_like(P, math.inf))
        inside = walking & (t_min <= torch.clamp(t_e, max=1.0))  # this piece's minimum comes first: stop there
        t_now = torch.where(inside, torch.maximum(t_min, t_now), t_now)
        done = walking & ~inside & ~torch.isfinite(t_e)  # no crossing left: the walk ends at t = 1
        t_now = torch.where(done, torch.ones_like(t_now), t_now)
        walking &= ~inside & ~done
        if not bool(walking.any()):
            break
        # the next crossing, for the members still walking: does the loss still fall beyond it?
        kk, jj = order[:, e] // hdim, order[:, e] % hdim
        a_k, s_k = alpha[rows, kk], slope[rows, kk]
        flip = torch.where(side[rows, kk, jj], -1.0, 1.0).to(u.dtype) * sigma[rows, jj] * dz[rows, kk, jj]
        s_new, a_new = s_k + flip, a_k - t_e * flip  # r_k is continuous at t_e
        P_new, S2_new = P + a_new * s_new - a_k * s_k, S2 + s_new.square() - s_k.square()
        passes = walking & (P_new + t_e * S2_new < 0)
        pins = walking & ~passes
        t_now = torch.where(walking, t_e, t_now)
        stop |= pins
        unit, point = torch.where(pins, jj, unit), torch.where(pins, kk, point)
        alpha[rows, kk] = torch.where(passes, a_new, a_k)
        slope[rows, kk] = torch.where(passes, s_new, s_k)
        P, S2 = torch.where(passes, P_new, P), torch.where(passes, S2_new, S2)
        passed[:, e] = passes
        walking = passes
    flipped = torch.zeros_like(passed).scatter_(1, order, passed).view_as(side)
    return t_now, stop, unit, point, side ^ flipped


def unpin_solved_kinks(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, grad_tol: float) -> torch.Tensor:
    """theta, with the kinks that sit on a data point only by accident moved off it, where that gives a
    smooth critical point. A kink whose best ReLU'(0) is 0 or 1 sits on the boundary of a piece
    that is itself solved (the gradient of that side is the min-norm Clarke element); the piece's
    least squares usually has many solutions (more (u, v, c) than independent data), so the kink can
    slide off the point into that side, KINK_SHIFT away, while f stays the same at every data point:
    the minimum-norm δ with A δ = 0 (the piece's design matrix) and δz_kj = ±KINK_SHIFT·|u_j| (kinks
    with ReLU'(0) inside (0, 1) held: δz = 0). Kept only where the result is a smooth critical point
    (|grad| < grad_tol, no kink on a data point); else the member keeps its point."""
    hdim, xs, n = (theta.shape[1] - 1) // 3, x[:, 0], x.shape[0]
    at, k = kinks_at_points(theta, x)
    _, g0, q = kink_gradient(theta, x, y, at, k)
    at = at & (q != 0)
    s_free = kink_multiplier(g0, q, xs[k], at)
    out = theta.clone()
    for i in at.any(1).nonzero()[:, 0].tolist():
        w, b, a, c = (t[0] for t in hidden_parts(theta[i : i + 1]))
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
        cand[:hdim], cand[hdim : 2 * hdim], cand[3 * hdim] = (
            (u + d[:hdim]) / scale,
            (v + d[hdim : 2 * hdim]) / scale,
            c + d[2 * hdim],
        )
        cand[2 * hdim : 3 * hdim] = a
        _, g = relu_mse_and_grad(cand[None], x, y)
        if bool(g.norm() < grad_tol) and not bool(kinks_at_points(cand[None], x)[0].any()):
            out[i] = cand
    return out


def relu_spec(theta: torch.Tensor) -> flat_mlp.MLPSpec:
    """The fast MLP path's spec of the 1 -> H -> 1 ReLU MLP that theta [N, 3H + 1] parametrises."""
    return flat_mlp.MLPSpec((1, (theta.shape[1] - 1) // 3, 1), 0.0)


def relu_mse_and_grad(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss [N], grad [N, P]) of the ReLU model on x [n, 1], y [n], as autograd computes them
    (ReLU'(0) = 0)."""
    m, n = theta.shape[0], x.shape[0]
    return flat_mlp.mse_and_grad(theta, relu_spec(theta), x.expand(m, n, 1), y.expand(m, n))


def relu_hessians(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[N, P, P]: the exact Hessian of the ReLU model's MSE (closed form, flat_mlp.hessians)."""
    return flat_mlp.hessians(theta, relu_spec(theta), x, y)


# --------------------------------------------------------------------------- the active set (ReLU)


def active_set_start(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, grad_tol: float) -> dict:
    """The state of the active-set method from theta [N, P] (see active_set_step): the iterate, each
    pair's side of its kink, the pinned kinks, and per member the lowest-Clarke-norm point visited."""
    xs, hdim = x[:, 0], (theta.shape[1] - 1) // 3
    w, b, _, _ = hidden_parts(theta)
    loss = relu_mse_and_grad(theta, x, y)[0]
    state = descent_start(theta, loss, clarke_grad(theta, x, y)[0].norm(dim=1), grad_tol)
    no_pins = torch.zeros(len(theta), hdim, dtype=torch.long, device=theta.device)
    state.update(
        theta=theta.clone(),
        side=(xs[None, :, None] * w[:, None, :] + b[:, None, :]) > 0,
        pinned=no_pins.bool(),
        pin_k=no_pins,
        pins_made=torch.zeros_like(state["steps"]),
        pins_released=torch.zeros_like(state["steps"]),
    )
    return state


def active_set_step(state: dict, x: torch.Tensor, y: torch.Tensor, grad_tol: float) -> None:
    """One iteration of the active-set method on the pieces of the ReLU model's loss, for the
    members not yet done (the work is theirs alone), in place.

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
         where the loss falls (its one-sided derivative along the kink's normal is negative).
    A member stops when the minimum-norm element of the Clarke subdifferential (clarke_grad) is
    below grad_tol: a smooth critical point, or a kink-critical one. This is a descent method: it
    finds local minima (smooth, or pinned at kinks), never saddles; but with every a_j ≠ 0 each
    smooth critical point of L is a minimiser of a convex piece, so there are no smooth saddles to
    find except through units with a_j = 0."""
    idx = (~state["done"]).nonzero()[:, 0]
    theta, side, pinned, k = state["theta"][idx], state["side"][idx], state["pinned"][idx].clone(), state["pin_k"][idx].clone()
    xs, hdim = x[:, 0], (theta.shape[1] - 1) // 3
    w, b, a, c = hidden_parts(theta)
    a = torch.where(a == 0, torch.ones_like(a), a)  # (u_j, v_j) needs a_j ≠ 0; f does not depend on (w_j, b_j) while a_j = 0
    scale, sigma = a.abs(), torch.where(a < 0, -1.0, 1.0).to(a.dtype)
    u, v = w * scale, b * scale
    du, dv, dc = _piece_newton_step(u, v, c, sigma, side, pinned, k, xs, y)
    frac, stop, jj, kk, side = line_search_through_pieces(u, v, c, du, dv, dc, sigma, side, pinned, k, xs, y)
    u, v, c = u + frac[:, None] * du, v + frac[:, None] * dv, c + frac * dc
    rows = stop.nonzero()[:, 0]
    pinned[rows, jj[rows]], k[rows, jj[rows]] = True, kk[rows]
    state["pins_made"][idx[rows]] += 1
    v = torch.where(pinned, -u * xs[k], v)  # pinned kinks exactly on their data points
    new = theta.clone()
    new[:, :hdim], new[:, hdim : 2 * hdim], new[:, 2 * hdim : 3 * hdim], new[:, 3 * hdim] = u / scale, v / scale, a, c
    solved = ~stop & pinned.any(1)
    if bool(solved.any()):
        release, go_up = _kinks_to_release(new, x, y, pinned, k, solved)
        ri, rj = release.nonzero(as_tuple=True)
        side[ri, k[ri, rj], rj] = go_up[ri, rj]
        pinned[release] = False
        state["pins_released"][idx] += release.sum(1)
    # the pattern follows the kinks (a pinned pair keeps its last side: it is 0 there either way)
    z = xs[None, :, None] * new[:, None, :hdim] + new[:, None, hdim : 2 * hdim]
    side = torch.where(z.abs() <= KINK_TOL * new[:, None, :hdim].abs(), side, z > 0)
    state["theta"][idx], state["side"][idx], state["pinned"][idx], state["pin_k"][idx] = new, side, pinned, k
    _record(state, idx, new, relu_mse_and_grad(new, x, y)[0], clarke_grad(new, x, y)[0].norm(dim=1), grad_tol)


def _piece_newton_step(u, v, c, sigma, side, pinned, k, xs, y):
    """(du, dv, dc): the minimum-norm least-squares step to the minimiser of the current piece's
    quadratic, pinned kinks held on their data points."""
    n, hdim = xs.shape[0], u.shape[1]
    xp = xs[k]  # each pinned unit's data point
    on = side & ~(pinned[:, None, :] & (torch.arange(n, device=xs.device)[None, :, None] == k[:, None, :]))
    col_u = sigma[:, None, :] * on * torch.where(pinned[:, None, :], xs[None, :, None] - xp[:, None, :], xs[None, :, None])
    col_v = sigma[:, None, :] * on * ~pinned[:, None, :]
    A = torch.cat([col_u, col_v, torch.ones_like(col_u[:, :, :1])], 2)  # [m, n, 2H + 1]
    resid = (col_u * u[:, None, :]).sum(2) + (col_v * v[:, None, :]).sum(2) + c[:, None] - y
    delta = torch.linalg.lstsq(A, -resid.unsqueeze(2), driver="gelsd").solution[
        ..., 0
    ]  # minimum-norm step (SVD: gelsy gave wrong steps on these rank-deficient pieces)
    return delta[:, :hdim], torch.where(pinned, -delta[:, :hdim] * xp, delta[:, hdim : 2 * hdim]), delta[:, 2 * hdim]


def _kinks_to_release(theta, x, y, pinned, k, solved):
    """(release [m, H], go_up [m, H]): on a solved piece, the pinned kinks whose one-sided
    derivative along their normal is negative, and to which side they go (up: the pair turns on)."""
    xs = x[:, 0]
    _, g0, q = kink_gradient(theta, x, y, pinned, k)
    gw, gb, _, _ = hidden_parts(g0)
    xk = xs[k]
    down = -(gw * xk + gb)  # d L / d(move the kink so that the pair turns off), per unit |[x_k, 1]|
    up = -down + q * (1 + xk.square())  # ... so that it turns on
    tol = RELEASE_MARGIN * g0.norm(dim=1, keepdim=True)
    go_up, go_down = pinned & (up < -tol), pinned & (down < -tol) & ~(up < -tol)
    return (go_up | go_down) & solved[:, None], go_up


def active_set_end_points(state: dict, x: torch.Tensor, y: torch.Tensor, grad_tol: float) -> torch.Tensor:
    """[N, P]: each member's end point, the lowest-Clarke-norm point visited, with the kinks that sit
    on a data point although their piece is solved slid off it where that gives a smooth critical
    point (unpin_solved_kinks). The state is left as it is, so a resumed run ends the same."""
    return unpin_solved_kinks(state["best"], x, y, grad_tol)


# --------------------------------------------------------------------------- at an end point


def relu_end_points(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, grad_tol: float) -> dict:
    """What min-ratio needs at the ReLU model's end points theta [N, P] (float64): loss, gradient
    (autograd's), its norm, the min-norm Clarke subgradient's norm, the kinks at data points
    (at, k, their best ReLU'(0) s), whether a point is smooth-critical or kink-critical, and the
    Hessian: restricted to the pinned kinks at kink-critical points (Sylvester: its signs are H's on
    that tangent space), the full one elsewhere."""
    loss, g = relu_mse_and_grad(theta, x, y)
    gn = g.norm(dim=1)
    at, k = kinks_at_points(theta, x)
    _, _, q = kink_gradient(theta, x, y, at, k)
    at = at & (q != 0)  # a kink where the residual or the out-weight is 0 is no kink of L
    cg, s = clarke_grad(theta, x, y, at, k)
    cgn = cg.norm(dim=1)
    usable = finite_rows(theta, gn)
    critical = usable & (gn < grad_tol) & ~at.any(1)
    kink_critical = usable & ~critical & (cgn < grad_tol)
    pins = at & kink_critical[:, None]  # the Hessian is restricted at kink-critical points only
    hess = torch.full((len(theta), theta.shape[1], theta.shape[1]), math.nan, dtype=theta.dtype, device=theta.device)
    if bool(usable.any()):
        hess[usable] = restricted_hessians(theta[usable], x, y, pins[usable], k[usable])
    return {
        "loss": loss,
        "grad": g,
        "grad_norm": gn,
        "clarke_norm": cgn,
        "at": at,
        "k": k,
        "s": s,
        "critical": critical,
        "kink_critical": kink_critical,
        "pins": pins.sum(1),
        "hessian": hess,
        "usable": usable,
    }


def smooth_end_points(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, grad_tol: float, l2: float = 0.0) -> dict:
    """The same for the tanh model: no kinks, the full Hessian everywhere. With l2 > 0 the gradient
    and Hessian are those of MSE + (l2/2)||θ||² (l2_objective); the loss is the MSE alone."""
    lg, hs = l2_objective(lambda t: tanh_mse_and_grad(t, x, y), lambda t: tanh_hessians(t, x, y), l2)
    loss, g = lg(theta)
    gn = g.norm(dim=1)
    usable = finite_rows(theta, gn)
    hess = torch.full((len(theta), theta.shape[1], theta.shape[1]), math.nan, dtype=theta.dtype, device=theta.device)
    if bool(usable.any()):
        hess[usable] = hs(theta[usable])
    zeros = torch.zeros(len(theta), dtype=torch.long, device=theta.device)
    return {
        "loss": loss,
        "grad": g,
        "grad_norm": gn,
        "clarke_norm": gn,
        "critical": usable & (gn < grad_tol),
        "kink_critical": usable & False,
        "pins": zeros,
        "hessian": hess,
        "usable": usable,
    }


WEIGHT_LIMIT = 1e6  # a weight beyond this in size: the training blew up (as experiments._base.WEIGHT_LIMIT)


def finite_rows(theta: torch.Tensor, *per_member: torch.Tensor) -> torch.Tensor:
    """[N] bool: members whose weights are finite and within WEIGHT_LIMIT, and whose other numbers
    (loss, gradient norm, ...) are finite: the others diverged."""
    ok = torch.isfinite(theta).all(1) & (theta.abs().amax(1) <= WEIGHT_LIMIT)
    for v in per_member:
        ok &= torch.isfinite(v)
    return ok


def min_ratio(eigs: torch.Tensor, rel_tol: float = 0.0) -> float:
    """Minimal ratio: the fraction of eigenvalues > 0 (1 at a strict local minimum).

    rel_tol > 0 counts eigenvalues with λ ≤ rel_tol · max|λ| as not positive: numerically zero
    eigenvalues (symmetries, dead units) then do not count as positive by rounding luck."""
    eigs = eigs.detach()
    threshold = rel_tol * eigs.abs().max() if rel_tol else 0.0
    return float((eigs > threshold).double().mean())


def spectrum_counts(hess: torch.Tensor, g: torch.Tensor, pins: torch.Tensor, eig_rel_tol: float, flat_rel_tol: float) -> dict:
    """Eigenvalues of each Hessian [N, P, P] (finite ones) and what they say: n_positive, n_negative
    (beyond eig_rel_tol·max|λ|), n_zero (the rest, less `pins` exact zeros that are the pinned
    kinks' normals, not eigenvalues of the piece), eig_min, eig_max, and null_share: the share of
    ||g|| along eigenvectors with |λ| <= flat_rel_tol·max|λ| (Newton-MR's relative residual
    ||g + Hp|| / ||g||; near 1 at a gradient-flat point, Frye et al. 2021)."""
    lam, vecs = torch.linalg.eigh(hess)
    scale = lam.abs().amax(1, keepdim=True)
    zero = eig_rel_tol * scale
    gv = torch.einsum("mpk,mp->mk", vecs, g).square()
    small = lam.abs() <= flat_rel_tol * scale
    return {
        "n_positive": (lam > zero).sum(1),
        "n_negative": (lam < -zero).sum(1),
        "n_zero": (lam.abs() <= zero).sum(1) - pins,
        "eig_min": lam[:, 0],
        "eig_max": lam[:, -1],
        "eigenvalues": lam,
        "null_share": ((gv * small).sum(1) / gv.sum(1).clamp_min(1e-300)).sqrt(),
    }


def dead_units(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[N]: hidden units of the ReLU model that are off (pre-activation <= 0) at every data point;
    a dead unit gives its in-weight, bias and out-weight zero rows in the Hessian."""
    w, b, _, _ = hidden_parts(theta)
    return ((x[:, 0][None, :, None] * w[:, None, :] + b[:, None, :]) <= 0).all(1).sum(1)


# --------------------------------------------------------------------------- start points spread over training


def log_spaced_epochs(first: int, last: int, count: int) -> torch.Tensor:
    """[count] epochs from first to last, evenly spaced on a log axis (rounded; repeats allowed)."""
    return torch.round(torch.logspace(math.log10(first), math.log10(last), count, dtype=torch.float64)).long()


def adam_snapshots(theta: torch.Tensor, loss_and_grad, lr: float, snapshot_at: torch.Tensor) -> torch.Tensor:
    """[N, P]: full-batch Adam (torch.optim.Adam's update, no weight decay) on every member from theta;
    member i's row is its weights after snapshot_at[i] steps, so that the points spread over training."""
    theta, m, v = theta.clone(), torch.zeros_like(theta), torch.zeros_like(theta)
    out = theta.clone()
    for t in range(1, int(snapshot_at.max()) + 1):
        _, g = loss_and_grad(theta)
        step_size = torch.full((len(theta), 1), lr / (1 - 0.9**t), dtype=theta.dtype, device=theta.device)
        theta, m, v = flat_mlp.adam_update(theta, g, m, v, step_size, math.sqrt(1 - 0.999**t), 0.0, (0.9, 0.999), 1e-8)
        now = snapshot_at == t
        out[now] = theta[now]
    return out
