"""An MLP as one flat vector: N members' parameters in one tensor [N, P] (module order, as
`Ensemble.flat()`), with the forward pass, the MSE and its gradient written out by hand as batched
matrix products over the member dimension, the exact Hessian in closed form, and the full-batch
gradient norm.

Low in the tree on purpose: the engine trains with it (engine/fast_mlp.py), the analysis finds
critical points with it (analysis/critical_points.py), and the experiments measure with it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from . import models
from .adam import adam_update  # noqa: F401  (Adam on flat tensors: its one home is adam.py)

# --------------------------------------------------------------------------- architecture


@dataclass(frozen=True)
class MLPSpec:
    """Linear layers widths[0] -> ... -> widths[-1], an activation max(z, slope*z) between them
    (slope 0.01: leaky_relu, slope 0: ReLU)."""

    widths: tuple[int, ...]
    slope: float

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return list(zip(self.widths[1:], self.widths[:-1]))  # (out, in) per layer

    @property
    def n_params(self) -> int:
        return sum(o * i + o for o, i in self.shapes)


def spec_of(module: nn.Module) -> MLPSpec | None:
    """The MLPSpec of an nn.Sequential of Linear layers with one kind of (leaky) ReLU, else None."""
    if not isinstance(module, nn.Sequential) or len(module) % 2 == 0:  # Linear, act, ..., Linear
        return None
    linears, acts = list(module)[0::2], list(module)[1::2]
    if not all(isinstance(l, nn.Linear) and l.bias is not None for l in linears):
        return None
    if any(a.out_features != b.in_features for a, b in zip(linears, linears[1:])):
        return None
    slopes = {float(a.negative_slope) if isinstance(a, nn.LeakyReLU) else 0.0 if type(a) is nn.ReLU else None for a in acts}
    if None in slopes or len(slopes) > 1:
        return None
    widths = (linears[0].in_features, *(l.out_features for l in linears))
    return MLPSpec(widths, slopes.pop() if slopes else 0.0)


def spec_of_model(model_name: str) -> MLPSpec | None:
    """The MLPSpec of a zoo model (None if it is not such an MLP); leaves the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        return spec_of(models.build(model_name))


def supports(model_name: str) -> bool:
    """Whether a zoo model is an MLP with one output that the fast path can train."""
    spec = spec_of_model(model_name)
    return spec is not None and spec.widths[-1] == 1


def init_flat(model_name: str, seeds: list[int], device="cpu", dtype=None) -> torch.Tensor:
    """[N, P]: member i = torch.manual_seed(seeds[i]); models.build(name), flattened in module order
    (the same initial weights as Ensemble.from_seeds builds; tests/test_fast_mlp.py checks it)."""
    rows = []
    for s in seeds:
        torch.manual_seed(s)
        rows.append(torch.cat([p.detach().reshape(-1) for p in models.build(model_name).parameters()]))
    return torch.stack(rows).to(device=device, dtype=dtype or torch.get_default_dtype())


# --------------------------------------------------------------------------- forward and backward


def _layers(theta: torch.Tensor, spec: MLPSpec) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Views (W [N, out, in], b [N, out]) into the flat parameters, in module order."""
    out, off = [], 0
    for o, i in spec.shapes:
        w = theta[:, off : off + o * i].reshape(-1, o, i)
        b = theta[:, off + o * i : off + o * i + o]
        out.append((w, b))
        off += o * i + o
    return out


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, fused: bool) -> torch.Tensor:
    """h [N, B, in] @ w[N]^T + b: bmm eagerly; as multiply-and-sum when compiling, because the
    compiler fuses that with its neighbours while a bmm is a separate library call."""
    if fused:
        return _contract(h.unsqueeze(2), w.unsqueeze(1), -1) + b.unsqueeze(1)
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def _contract(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """(a * b).sum(dim), written as a plain product when that dimension has size 1: a sum over
    one element would still be a reduction to the compiler, which then stores its input whole."""
    p = a * b
    return p.squeeze(dim) if p.shape[dim] == 1 else p.sum(dim)


def forward(theta: torch.Tensor, spec: MLPSpec, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """x [N, B, in] (or [B, in], shared) -> outputs [N, B, out]."""
    if x.dim() == 2:
        x = x.expand(theta.shape[0], *x.shape)
    h = x
    layers = _layers(theta, spec)
    for l, (w, b) in enumerate(layers):
        h = _linear(h, w, b, fused)
        if l < len(layers) - 1:
            h = torch.where(h > 0, h, h * spec.slope)
    return h


def mse_and_grad(theta: torch.Tensor, spec: MLPSpec, x: torch.Tensor, y: torch.Tensor, fused: bool = False):
    """Per-member mean squared error over the batch and its gradient, by hand.

    x [N, B, in], y [N, B] -> (loss [N], grad [N, P] in the layout of theta)."""
    layers = _layers(theta, spec)
    hs, zs = [x], []  # inputs of each layer, pre-activations of the hidden ones
    h = x
    for l, (w, b) in enumerate(layers):
        z = _linear(h, w, b, fused)
        if l < len(layers) - 1:
            zs.append(z)
            h = torch.where(z > 0, z, z * spec.slope)
            hs.append(h)
        else:
            h = z
    r = h.squeeze(-1) - y  # [N, B]
    loss = r.square().mean(1)
    d = (r * (2.0 / r.shape[1])).unsqueeze(-1)  # dloss/dout, [N, B, 1]
    grads = []
    for l in range(len(layers) - 1, -1, -1):
        w, _ = layers[l]
        if fused and l > 0:
            # recompute this layer's input from the one before rather than keep it: the compiler
            # then fuses it into the reductions below instead of storing an [N, B, width] tensor
            z = _linear(hs[l - 1], *layers[l - 1], fused)
            h_in = torch.where(z > 0, z, z * spec.slope)
        else:
            z, h_in = (zs[l - 1] if l > 0 else None), hs[l]
        if fused:
            dw = _contract(d.unsqueeze(3), h_in.unsqueeze(2), 1)  # [N, out, in]
        else:
            dw = torch.bmm(d.transpose(1, 2), h_in)
        grads.append(d.sum(1))
        grads.append(dw.flatten(1))
        if l > 0:
            dh = _contract(d.unsqueeze(3), w.unsqueeze(1), 2) if fused else torch.bmm(d, w)  # [N, B, in]
            d = torch.where(z > 0, dh, dh * spec.slope)
    return loss, torch.cat(grads[::-1], dim=1)


# --------------------------------------------------------------------------- exact Hessians


def hessians(theta: torch.Tensor, spec: MLPSpec, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact Hessian of each member's mean squared error on (x [n, in], y [n] or [N, n]) with
    respect to its parameters: [N, P, P], in the layout of theta. Closed form, batched over members.

    With a piecewise-linear activation, f is linear in each layer's parameters once the activation
    pattern is fixed, so (r = f - y, c = 2 / n)
        H = c J^T J + c sum_b r_b d2f_b,
    J the per-sample Jacobian [n, P]; d2f_b has only blocks between two different layers l < m:
        d2f / dW_m[i, j] dW_l[p, q] = delta_m[i] * (dh_m[j] / dz_l[p]) * h_l[q],
    delta_m = df/dz_m and h_l the input of layer l (q = in_l: the bias, whose input is 1), since
    delta_m does not depend on the layers below m. The same as autograd's Hessian (second
    derivative 0 at the kinks), at the cost of a few batched products instead of P
    Hessian-vector products."""
    n_mem, n = theta.shape[0], x.shape[0]
    x = x.to(theta.dtype).expand(n_mem, n, x.shape[-1])
    y = y.to(theta.dtype).expand(n_mem, n)
    layers = _layers(theta, spec)
    ones = x.new_ones(n_mem, n, 1)
    hs, slopes = [torch.cat([x, ones], -1)], []  # layer inputs with a 1 appended (the bias column)
    h = x
    for l, (w, b) in enumerate(layers):
        z = _linear(h, w, b, False)
        if l < len(layers) - 1:
            slopes.append(torch.where(z > 0, torch.ones_like(z), torch.full_like(z, spec.slope)))  # activation derivative
            h = z * slopes[-1]
            hs.append(torch.cat([h, ones], -1))
    c = (z.squeeze(-1) - y) * (2.0 / n)  # [N, n]: the residual weights of the second term
    # delta_l = df/dz_l per sample, from the output down
    deltas = [ones]
    for l in range(len(layers) - 1, 0, -1):
        deltas.insert(0, torch.bmm(deltas[0], layers[l][0]) * slopes[l - 1])
    jac = [(d.unsqueeze(3) * hh.unsqueeze(2)).flatten(2) for d, hh in zip(deltas, hs)]  # [N, n, out*(in+1)] per layer
    pos = torch.argsort(_extended_to_flat(spec)).to(theta.device)  # extended index -> position in theta
    J = torch.cat(jac, -1)[:, :, torch.argsort(pos)]  # in theta's layout
    H = torch.bmm(J.transpose(1, 2), J) * (2.0 / n)  # Gauss-Newton part
    offsets = [0]
    for o, i in spec.shapes:
        offsets.append(offsets[-1] + o * (i + 1))
    for l in range(len(layers) - 1):
        for m in range(l + 1, len(layers)):
            if m == l + 1:  # dh_m / dz_l = diag(slope_l): contract it without forming the diagonal
                a = torch.einsum("Nb,Nbi,Nbj,Nbq->Nijq", c, deltas[m], slopes[l], hs[l])  # [N, out_m, out_l, in_l + 1]
                block = torch.diag_embed(a.transpose(2, 3)).permute(0, 1, 3, 4, 2)  # [N, out_m, in_m, out_l, in_l + 1]
                if m + 1 < len(layers):  # needed by the layers above m only
                    T = torch.diag_embed(slopes[l])
            else:  # dh_m / dz_l = slope_{m-1} * (W_{m-1} @ dh_{m-1} / dz_l), dense and small
                T = slopes[m - 1].unsqueeze(-1) * torch.einsum("Nij,Nbjp->Nbip", layers[m - 1][0], T)
                block = torch.einsum("Nb,Nbi,Nbjp,Nbq->Nijpq", c, deltas[m], T, hs[l])
            block = torch.cat([block, torch.zeros_like(block[:, :, :1])], 2)  # the bias of m: no dependence on layer l
            block = block.flatten(1, 2).flatten(2)
            rows, cols = pos[offsets[m] : offsets[m + 1], None], pos[None, offsets[l] : offsets[l + 1]]
            H[:, rows, cols] += block
            H[:, cols.T, rows.T] += block.transpose(1, 2)
    return H


def _extended_to_flat(spec: MLPSpec) -> torch.Tensor:
    """Indices that take the per-layer [out, in + 1] layout (bias as the last column) to theta's
    layout (weight [out, in] row-major, then bias [out], per layer)."""
    idx, off = [], 0
    for o, i in spec.shapes:
        grid = torch.arange(o * (i + 1)).view(o, i + 1) + off
        idx += [grid[:, :i].reshape(-1), grid[:, i]]
        off += o * (i + 1)
    return torch.cat(idx)


@contextmanager
def _num_threads(n: int):
    old = torch.get_num_threads()
    if n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- full-batch gradient


@torch.no_grad()
def full_batch_grad_norm(
    theta: torch.Tensor, spec: MLPSpec, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's full-data MSE and the L2 norm of its gradient (of the data loss alone, no
    weight decay) on x [n, in], y [n] or [N, n], in float64: (loss [N], grad_norm [N])."""
    theta = theta.double()
    xs = x.double().expand(theta.shape[0], *x.shape)
    ys = y.double().expand(theta.shape[0], x.shape[0])
    small = theta.shape[0] * x.shape[0] * max(spec.widths) < 1 << 17 and x.device.type == "cpu"
    with _num_threads(1 if small else torch.get_num_threads()):  # tiny: a second thread only waits (see FastMLPTrainer)
        loss, grad = mse_and_grad(theta, spec, xs, ys)
        return loss, grad.norm(dim=1)
