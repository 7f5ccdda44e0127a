"""Curvature from Hessian-vector products, never forming the Hessian: top eigenvalues (Lanczos),
the trace (Hutchinson, Hutch++) and the spectral density (stochastic Lanczos quadrature).

    top_eigenvalues(model, data, loss="ce", k=1)         -> Eigenvalues (.values, .n_hvp)
    trace(model, data, loss="ce", seed=0)                 -> Estimate (.value, .ci, .n_hvp)
    top_eigenvalues_and_trace(model, data, loss="ce")     -> (Eigenvalues, Estimate), sharing the work
    spectral_density(model, data, loss="ce", seed=0)      -> Density (.moment(p), .curve(), .plot())

The model may be an nn.Module or an ensemble (see analysis.objective): for an ensemble, every
member is measured in the same run (batched Hessian-vector products) and each field holds one
entry per member. The estimators themselves work on any symmetric operator given as a batched
matrix-vector product `matvec(V [N, k, P]) -> [N, k, P]` (the tests use explicit matrices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .objective import LossArg, Objective

MatVec = Callable[[torch.Tensor], torch.Tensor]  # [N, k, P] -> [N, k, P]


# --------------------------------------------------------------------------- intervals


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile (Hill's expansion around the normal quantile; error < 1e-4 for df ≥ 3)."""
    z = float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))
    if df <= 0:
        return math.inf
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def mean_ci(samples: torch.Tensor, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and Student-t interval of the last dimension: (mean, low, high), each [...]."""
    m = samples.shape[-1]
    mean = samples.mean(-1)
    if m < 2:
        nan = torch.full_like(mean, float("nan"))
        return mean, nan, nan
    half = t_quantile(0.5 + level / 2, m - 1) * samples.std(-1) / math.sqrt(m)
    return mean, mean - half, mean + half


@dataclass
class Estimate:
    """A stochastic estimate with its certificate: the value, a `level` interval and its budget.
    For an ensemble, value and ci hold one entry per member."""

    value: float | list[float]
    ci: tuple[float, float] | list[tuple[float, float]]
    n_hvp: int  # Hessian-vector products per member
    method: str
    level: float = 0.95
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"value": self.value, "ci": self.ci, "level": self.level, "n_hvp": self.n_hvp, "method": self.method, **self.info}


def _estimate(mean, low, high, n_hvp, method, level, info, single) -> Estimate:
    vals = mean.tolist()
    cis = [(float(a), float(b)) for a, b in zip(low.tolist(), high.tolist())]
    if single:
        return Estimate(vals[0], cis[0], n_hvp, method, level, info)
    return Estimate(vals, cis, n_hvp, method, level, info)


# --------------------------------------------------------------------------- random vectors


def rademacher(shape, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1


# --------------------------------------------------------------------------- Lanczos


def lanczos(
    matvec: MatVec, v0: torch.Tensor, steps: int, stop: Callable[[torch.Tensor, torch.Tensor], bool] | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lanczos with full re-orthogonalisation on N operators at once (one per member).

    v0: [N, P] start vectors. Returns (T [N, m, m] tridiagonal, Q [N, m, P] orthonormal basis),
    m ≤ steps. `stop(T, b)` is asked after every step, with b [N] the norm of what is left of the
    last product after orthogonalisation (the next coupling: Ritz residuals are b · |y_m|). When a
    member's Krylov space is exhausted, it continues from a fresh random direction orthogonal to
    its basis (T gets a zero coupling), so every Ritz value stays an exact eigenvalue of that member's operator."""
    N, P = v0.shape
    steps = min(steps, P)
    g = torch.Generator().manual_seed(seed + 7919)
    Q = torch.zeros(N, steps, P, dtype=torch.float64, device=v0.device)
    alpha = torch.zeros(N, steps, dtype=torch.float64, device=v0.device)
    beta = torch.zeros(N, steps, dtype=torch.float64, device=v0.device)
    q = v0.to(torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    m = 0
    for j in range(steps):
        Q[:, j] = q
        m = j + 1
        w = matvec(q[:, None])[:, 0].to(torch.float64)
        alpha[:, j] = (w * q).sum(1)
        basis = Q[:, : j + 1]
        for _ in range(2):  # twice is enough (Kahan): orthogonal to rounding
            w = w - torch.einsum("njp,nj->np", basis, torch.einsum("njp,np->nj", basis, w))
        b = w.norm(dim=1)
        T = _tridiagonal(alpha[:, :m], beta[:, : m - 1])
        if j == steps - 1 or (stop is not None and stop(T, b)):
            break
        dead = b <= 1e-10 * alpha[:, j].abs().clamp_min(1.0)
        for i in torch.nonzero(dead).flatten().tolist():
            r = torch.randn(P, generator=g, dtype=torch.float64).to(v0.device)
            for _ in range(2):
                r = r - basis[i].T @ (basis[i] @ r)
            w[i], b[i] = r, 0.0
        beta[:, j] = b
        q = w / w.norm(dim=1, keepdim=True)
    return _tridiagonal(alpha[:, :m], beta[:, : m - 1]), Q[:, :m]


def _tridiagonal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    T = torch.diag_embed(a)
    if b.shape[1]:
        T = T + torch.diag_embed(b, 1) + torch.diag_embed(b, -1)
    return T


# --------------------------------------------------------------------------- top eigenvalues


@dataclass
class Eigenvalues:
    values: list[float] | list[list[float]]  # largest first; one list per member for an ensemble
    n_hvp: int
    converged: bool | list[bool]
    vectors: torch.Tensor | None = None  # [k, P] (or [N, k, P]) unit Ritz vectors, if asked for
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"values": self.values, "n_hvp": self.n_hvp, "converged": self.converged, **self.info}


def _lanczos_top(matvec: MatVec, v0: torch.Tensor, k: int, tol: float, max_steps: int, seed: int):
    """Lanczos until each of the top k Ritz pairs of every member has a residual
    ||H y - θ y|| ≤ tol · |θ_1| (relative to the largest), and the top k values no longer change by
    more than tol. The residual is what makes `converged` true: a Ritz value can sit still on a
    lower eigenvalue before the one above it appears, and changes between steps cannot see that.
    Returns (values [N, k], T, Q, converged [N])."""
    state = {"prev": None, "conv": torch.zeros(v0.shape[0], dtype=torch.bool)}

    def stop(T, b):
        theta, Y = torch.linalg.eigh(T)
        ritz, last = theta.flip(-1)[:, :k], Y[:, -1, :].flip(-1)[:, :k]  # last row of each Ritz vector
        prev, state["prev"] = state["prev"], ritz
        if prev is None or ritz.shape[1] < k or prev.shape[1] < k:
            return False
        scale = ritz[:, :1].abs().clamp_min(1e-30)
        residual_ok = (b[:, None] * last.abs() <= tol * scale).all(1)
        settled = ((ritz - prev).abs() <= tol * scale).all(1)
        state["conv"] = residual_ok & settled
        return bool(state["conv"].all())

    T, Q = lanczos(matvec, v0, max_steps, stop, seed)
    top = torch.linalg.eigvalsh(T).flip(-1)[:, :k]
    converged = state["conv"] | torch.tensor(T.shape[1] == v0.shape[1])  # steps = P: exact
    return top, T, Q, converged


def top_eigenvalues_of(
    matvec: MatVec, v0: torch.Tensor, k: int = 1, tol: float = 1e-3, max_steps: int = 100, seed: int = 0, vectors: bool = False
):
    """The k largest eigenvalues of N symmetric operators by Lanczos, stopping when each of the
    top k Ritz pairs of every member has a residual ≤ tol · |λ1| (see _lanczos_top).
    Returns (values [N, k], steps, converged [N], vectors [N, k, P] or None)."""
    top, T, Q, converged = _lanczos_top(matvec, v0, k, tol, max_steps, seed)
    vecs = None
    if vectors:
        _, evecs = torch.linalg.eigh(T)
        Y = evecs.flip(-1)[:, :, :k]  # [N, m, k]
        vecs = torch.einsum("nmk,nmp->nkp", Y, Q)
    return top, T.shape[1], converged, vecs


def top_eigenvalues(
    model,
    data,
    loss: LossArg = "ce",
    k: int = 1,
    tol: float = 1e-3,
    max_steps: int = 100,
    seed: int = 0,
    mode: str = "eval",
    batch_size: int | None = None,
    return_vectors: bool = False,
) -> Eigenvalues:
    """The k largest eigenvalues of the Hessian of the mean loss (Lanczos on Hessian-vector
    products; one HVP per step). return_vectors gives the unit eigenvectors too (e.g. as
    directions for loss_plane)."""
    obj = Objective(model, data, loss, mode, batch_size)
    obj.check_deterministic()
    g = torch.Generator().manual_seed(seed)
    v0 = torch.randn(obj.n, obj.dim, generator=g, dtype=torch.float64).to(obj.theta0.device)
    top, steps, conv, vecs = top_eigenvalues_of(obj.hvp, v0, k, tol, max_steps, seed, return_vectors)
    single = not obj.ensemble
    vals = top.tolist()
    convs = conv.tolist()
    if vecs is not None:
        vecs = vecs.to(obj.theta0.dtype)
    return Eigenvalues(
        vals[0] if single else vals,
        steps,
        convs[0] if single else convs,
        (vecs[0] if single else vecs) if vecs is not None else None,
        {"method": "lanczos", "tol": tol, **obj.describe()},
    )


# --------------------------------------------------------------------------- trace


class HutchinsonSums:
    """Running sums of Hutchinson's estimator over Rademacher vectors, for N operators at once:
    add blocks of products as they come, ask for the mean and interval at any time.

    The interval does not use the spread of the m scalars zᵀAz: they are skewed, and their sample
    variance is small exactly when the mean is low (with a few large eigenvalues, t-intervals from
    them cover the truth ~92% of the time at m = 30, measured). It uses instead the variance of a
    Rademacher sample, known in closed form, Var zᵀAz = 2(‖A‖²_F − Σᵢ A²ᵢᵢ), estimated without
    bias from the same products: ‖A‖²_F = E‖Az‖², and Σᵢ A²ᵢᵢ = E (z⊙Az)·(z'⊙Az') for
    independent z, z' (a U-statistic over pairs)."""

    def __init__(self, n: int, dim: int, device="cpu"):
        self.samples = []
        self.frob = torch.zeros(n, dtype=torch.float64, device=device)  # Σ_k ‖A z_k‖²
        self.diag_sum = torch.zeros(n, dim, dtype=torch.float64, device=device)  # Σ_k z_k ⊙ A z_k
        self.diag_sq = torch.zeros(n, dtype=torch.float64, device=device)  # Σ_k ‖z_k ⊙ A z_k‖²

    @property
    def m(self) -> int:
        return sum(s.shape[1] for s in self.samples)

    def add(self, Z: torch.Tensor, AZ: torch.Tensor) -> None:
        """Z, AZ: [N, b, P] Rademacher vectors and their products."""
        AZ = AZ.to(torch.float64)
        d = Z * AZ
        self.samples.append(d.sum(-1))
        self.frob += AZ.pow(2).sum((1, 2))
        self.diag_sum += d.sum(1)
        self.diag_sq += d.pow(2).sum((1, 2))

    def interval(self, level: float = 0.95):
        """(mean, low, high), each [N]."""
        samples = torch.cat(self.samples, 1)
        m = samples.shape[1]
        mean = samples.mean(1)
        if m < 2:
            nan = torch.full_like(mean, float("nan"))
            return mean, nan, nan
        diag2 = (self.diag_sum.pow(2).sum(1) - self.diag_sq) / (m * (m - 1))
        var = (2 * (self.frob / m - diag2)).clamp_min(0)
        half = t_quantile(0.5 + level / 2, m - 1) * (var / m).sqrt()  # t, not normal: conservative at small m
        return mean, mean - half, mean + half


def hutchinson_of(
    matvec: MatVec, n: int, dim: int, n_hvp: int, seed: int = 0, level: float = 0.95, block: int = 10, device="cpu"
):
    """Hutchinson's estimator: the mean of zᵀAz over n_hvp Rademacher vectors z, with the
    interval of HutchinsonSums. Returns (mean, low, high), each [n]."""
    g = torch.Generator().manual_seed(seed)
    sums = HutchinsonSums(n, dim, device)
    for s in range(0, n_hvp, block):
        Z = rademacher((n, min(block, n_hvp - s), dim), g).to(device)
        sums.add(Z, matvec(Z))
    return sums.interval(level)


def hutchpp_of(matvec: MatVec, n: int, dim: int, n_hvp: int, seed: int = 0, level: float = 0.95, block: int = 10, device="cpu"):
    """Hutch++ (Meyer et al. 2021): the trace on a sketched top subspace, exactly, plus
    Hutchinson on the rest. Of n_hvp products, a third sketch, a third project, a third go to
    Hutchinson; the interval is Hutchinson's on the remainder (the exact part has no variance
    given the sketch). Returns (mean, low, high), each [n].

    The remainder's samples (Pz)ᵀA(Pz), P = I − QQᵀ, are Hutchinson samples zᵀ(PAP)z with
    Rademacher z, so hutchinson_of on the operator PAP gives them and their interval."""
    g = torch.Generator().manual_seed(seed)
    k = max(1, n_hvp // 3)
    r = n_hvp - 2 * k
    if r < 2:
        raise ValueError(f"Hutch++ needs n_hvp ≥ 8, not {n_hvp}")
    S = rademacher((n, k, dim), g).to(device)
    Y = _blocked(matvec, S, block)
    Qm, _ = torch.linalg.qr(Y.transpose(1, 2))  # [n, dim, k], orthonormal columns
    Qt = Qm.transpose(1, 2)  # [n, k, dim]
    exact = (Qt * _blocked(matvec, Qt, block)).sum((1, 2))

    def project(V):  # (I − QQᵀ) on each row of V [n, b, dim]
        return V - torch.einsum("nbk,nkp->nbp", torch.einsum("nbp,nkp->nbk", V.to(torch.float64), Qt), Qt)

    mean, low, high = hutchinson_of(lambda V: project(matvec(project(V))), n, dim, r, seed + 1, level, block, device)
    return exact + mean, exact + low, exact + high


def _blocked(matvec: MatVec, V: torch.Tensor, block: int) -> torch.Tensor:
    return torch.cat([matvec(V[:, s : s + block]).to(torch.float64) for s in range(0, V.shape[1], block)], 1)


def trace(
    model,
    data,
    loss: LossArg = "ce",
    method: str = "hutch++",
    n_hvp: int = 99,
    seed: int = 0,
    level: float = 0.95,
    mode: str = "eval",
    batch_size: int | None = None,
    block: int = 10,
) -> Estimate:
    """The Hessian's trace: Hutch++ (default) or Hutchinson with n_hvp Hessian-vector products,
    and a `level` interval. block: how many products are batched in one pass (memory)."""
    if method not in ("hutch++", "hutchinson"):
        raise ValueError(f"method must be 'hutch++' or 'hutchinson', not {method!r}")
    obj = Objective(model, data, loss, mode, batch_size)
    obj.check_deterministic()
    fn = hutchpp_of if method == "hutch++" else hutchinson_of
    mean, low, high = fn(obj.hvp, obj.n, obj.dim, n_hvp, seed, level, block, obj.theta0.device)
    return _estimate(mean, low, high, n_hvp, method, level, {"seed": seed, **obj.describe()}, not obj.ensemble)


def top_eigenvalues_and_trace(
    model,
    data,
    loss: LossArg = "ce",
    k: int = 1,
    tol: float = 1e-3,
    max_steps: int = 100,
    trace_rtol: float = 0.1,
    min_trace_hvp: int = 20,
    max_trace_hvp: int = 300,
    seed: int = 0,
    level: float = 0.95,
    mode: str = "eval",
    batch_size: int | None = None,
    block: int = 10,
) -> tuple[Eigenvalues, Estimate]:
    """top_eigenvalues and trace in one run that shares what they can: one objective (one graph
    of the gradient), and the Lanczos run of the eigenvalues as the sketch of Hutch++. Its basis Q
    spans the top of the spectrum; tr(QᵀHQ) = Σⱼ αⱼ is exact from Lanczos's own products, and
    Hutchinson estimates only the rest, tr((I − QQᵀ)H(I − QQᵀ)), whose variance lacks the top
    eigenvalues' share. Its Rademacher vectors are drawn independently of Q, so the estimate is
    unbiased given Q. They come in blocks of `block` until the interval's half-width is at most
    trace_rtol·|trace| for every member (after at least min_trace_hvp of them; at most
    max_trace_hvp). A stop rule on the interval makes its coverage approximate (the nominal level
    holds for a fixed budget). The trace's n_hvp counts the Lanczos products it reuses.

    An ensemble with the default "graph" products is measured member by member, each stopping on
    its own tolerance (Lanczos) and its own interval (trace), with the start and Rademacher vectors
    it would get in a batched run: never slower than a loop over the members. Then n_hvp (and
    "lanczos_steps", "hutchinson_samples") are the largest member's, and info holds each member's
    ("lanczos_steps_each", "hutchinson_samples_each")."""
    obj = Objective(model, data, loss, mode, batch_size)
    obj.check_deterministic()
    g = torch.Generator().manual_seed(seed)
    v0 = torch.randn(obj.n, obj.dim, generator=g, dtype=torch.float64).to(obj.theta0.device)
    budget = (k, tol, max_steps, trace_rtol, min_trace_hvp, max_trace_hvp, seed, level, block)
    if obj.n > 1 and obj.hvp_backend == "graph":
        # Member by member: the gradient's graph of a member costs the same alone as inside the
        # ensemble's (the graph is built member by member), so batching saves nothing, and alone
        # each member stops on its own tolerance instead of running until the slowest one stops.
        parts = [_eig_and_trace(obj.member(i), v0[i : i + 1], *budget, rows=slice(i, i + 1), n_rows=obj.n) for i in range(obj.n)]
    else:  # one model, or vmap-batched products ("forward"), which pay on wide hardware
        parts = [_eig_and_trace(obj, v0, *budget, rows=slice(None), n_rows=obj.n)]
    top, conv = torch.cat([q[0] for q in parts]), torch.cat([q[1] for q in parts])
    mean, low, high = (torch.cat([q[2][j] for q in parts]) for j in range(3))
    steps_each = [q[3] for q in parts for _ in range(q[0].shape[0])]
    samples_each = [q[4] for q in parts for _ in range(q[0].shape[0])]
    exact_each = torch.cat([q[5] for q in parts])
    steps, samples = max(steps_each), max(samples_each)
    single = not obj.ensemble
    eig = Eigenvalues(
        top[0].tolist() if single else top.tolist(),
        steps,
        bool(conv[0]) if single else conv.tolist(),
        None,
        {"method": "lanczos", "tol": tol, **obj.describe(), **({"lanczos_steps_each": steps_each} if len(parts) > 1 else {})},
    )
    info = {"seed": seed, "lanczos_steps": steps, "hutchinson_samples": samples, "trace_rtol": trace_rtol, **obj.describe()}
    if len(parts) > 1:  # each member's own budget; n_hvp and the totals above are the largest member's
        info.update(lanczos_steps_each=steps_each, hutchinson_samples_each=samples_each)
    tr = _estimate(
        exact_each + mean, exact_each + low, exact_each + high, steps + samples, "lanczos-hutch++", level, info, single
    )
    return eig, tr


def _eig_and_trace(obj, v0, k, tol, max_steps, trace_rtol, min_trace_hvp, max_trace_hvp, seed, level, block, rows, n_rows):
    """top_eigenvalues_and_trace on the members of `obj` (all of them, or one member alone):
    (top [N, k], converged [N], (mean, low, high) of the remainder's trace, Lanczos steps,
    Hutchinson samples, the exact part Σ αⱼ [N]). rows: which rows of the Rademacher draws (made
    for n_rows members, so that a member alone sees the vectors it would see in the ensemble)."""
    top, T, Q, conv = _lanczos_top(obj.hvp, v0, k, tol, max_steps, seed)
    exact = T.diagonal(dim1=1, dim2=2).sum(1)

    def project(V):  # (I − QQᵀ) on each row of V [N, b, P]
        return V - torch.einsum("nbk,nkp->nbp", torch.einsum("nbp,nkp->nbk", V.to(torch.float64), Q), Q)

    rest = HutchinsonSums(obj.n, obj.dim, obj.theta0.device)
    gz = torch.Generator().manual_seed(seed + 1)
    while rest.m < max_trace_hvp:
        Z = rademacher((n_rows, min(block, max_trace_hvp - rest.m), obj.dim), gz)[rows].to(obj.theta0.device)
        rest.add(Z, project(obj.hvp(project(Z))))
        mean, low, high = rest.interval(level)
        if rest.m >= min_trace_hvp and bool(((high - low) / 2 <= trace_rtol * (exact + mean).abs()).all()):
            break
    return top, conv, (mean, low, high), T.shape[1], rest.m, exact


# --------------------------------------------------------------------------- spectral density


@dataclass
class Density:
    """Stochastic Lanczos quadrature: for each random vector, the Ritz values (nodes) and the
    squared first components of their eigenvectors (weights, summing to 1). The density is the
    average over vectors of Σ weight·δ(λ - node). Arrays are [n_vectors, steps] for one model,
    [N, n_vectors, steps] for an ensemble."""

    nodes: torch.Tensor
    weights: torch.Tensor
    n_hvp: int
    info: dict = field(default_factory=dict)

    def moment(self, p: int) -> torch.Tensor:
        """Estimate of tr(Hᵖ)/P (per member for an ensemble); exact per vector for p < 2·steps."""
        return (self.weights * self.nodes.pow(p)).sum(-1).mean(-1)

    def curve(self, grid: torch.Tensor | None = None, sigma: float | None = None, points: int = 400):
        """(grid, density) with each node smoothed by a Gaussian of width sigma (default: 1% of
        the spectrum's range)."""
        lo, hi = float(self.nodes.min()), float(self.nodes.max())
        span = max(hi - lo, 1e-12)
        sigma = sigma or 0.01 * span
        if grid is None:
            grid = torch.linspace(lo - 0.05 * span, hi + 0.05 * span, points, dtype=torch.float64)
        kern = torch.exp(-0.5 * ((grid - self.nodes[..., None]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        dens = (self.weights[..., None] * kern).sum(-2).mean(-2)
        return grid, dens

    def to_dict(self) -> dict:
        return {"nodes": self.nodes.tolist(), "weights": self.weights.tolist(), "n_hvp": self.n_hvp, **self.info}

    def plot(self, ax=None, label: str | None = None, sigma: float | None = None):
        return plot_density(self, ax, label, sigma)


def spectral_density_of(matvec: MatVec, n: int, dim: int, n_vectors: int = 5, steps: int = 60, seed: int = 0, device="cpu"):
    """(nodes, weights) [n, n_vectors, m] of SLQ on N operators."""
    g = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for i in range(n_vectors):
        v0 = rademacher((n, dim), g).to(device)
        T, _ = lanczos(matvec, v0, steps, seed=seed + i)
        evals, evecs = torch.linalg.eigh(T)
        nodes.append(evals)
        weights.append(evecs[:, 0, :].pow(2))
    return torch.stack(nodes, 1), torch.stack(weights, 1)


def spectral_density(
    model,
    data,
    loss: LossArg = "ce",
    n_vectors: int = 5,
    steps: int = 60,
    seed: int = 0,
    mode: str = "eval",
    batch_size: int | None = None,
) -> Density:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019):
    n_vectors Rademacher start vectors, `steps` Lanczos steps each (n_vectors·steps HVPs)."""
    obj = Objective(model, data, loss, mode, batch_size)
    obj.check_deterministic()
    nodes, weights = spectral_density_of(obj.hvp, obj.n, obj.dim, n_vectors, steps, seed, obj.theta0.device)
    if not obj.ensemble:
        nodes, weights = nodes[0], weights[0]
    return Density(
        nodes, weights, n_vectors * nodes.shape[-1], {"n_vectors": n_vectors, "steps": steps, "seed": seed, **obj.describe()}
    )


def plot_density(density: Density, ax=None, label: str | None = None, sigma: float | None = None):
    """The density on a symlog-free linear λ axis and a log density axis (the bulk near 0 and the
    outliers both show). One line per member for an ensemble. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    grid, dens = density.curve(sigma=sigma)
    rows = dens if dens.dim() == 2 else dens[None]
    for i, row in enumerate(rows):
        ax.plot(
            grid.numpy(),
            row.clamp_min(1e-12).numpy(),
            lw=1.2,
            label=(label or "density") + (f" (member {i})" if len(rows) > 1 else ""),
        )
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(float(dens.max()) * 1e-6, 1e-12))  # the Gaussian tails below say nothing
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density (Gaussian-smoothed)")
    n_vec = density.info.get("n_vectors", "?")
    ax.set_title(f"Hessian spectral density (SLQ, {n_vec} vectors × {density.info.get('steps', '?')} steps)")
    ax.legend(fontsize=8)
    return ax
