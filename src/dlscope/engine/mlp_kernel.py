"""Whole runs of Adam steps for an ensemble of tiny MLPs as one machine-code loop (numba).

At batch size 1 a 573-parameter MLP is about 10,000 floating-point operations per step; even the
compiled torch loop (fast_mlp.train_loop) spends most of each step around the arithmetic: a
kernel launch per fused op and new tensors every step. Here one call runs all the steps of an
epoch, with the members as the innermost dimension of every array: each scalar operation of the
textbook forward pass, backward pass and Adam update becomes one loop over the members, which the
compiler turns into SIMD instructions (16 float32 members: one AVX-512 register), and nothing is
allocated between steps. One thread, so side-by-side trials each keep to their own core.

The arithmetic is that of flat_mlp.mse_and_grad and flat_mlp.adam_update (the same formulas in
the same dtype); only the order of additions inside a dot product differs, so results agree with
the torch paths to float rounding (tests/test_fast_mlp.py). The first call compiles (a few
seconds); numba caches the machine code on disk for the next process.

Layouts (members last): theta, exp_avg, exp_avg_sq [P, N]; xs [D, B, in, N]; ys [D, B, N];
step_size [S, N]; bc2_sqrt [S]; the batch losses come back as [S, N].
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from ..flat_mlp import MLPSpec


def _numba():
    """numba, or None where it is missing or does not import (a numpy it does not support): then the
    trainer takes the torch paths, with a warning."""
    if importlib.util.find_spec("numba") is None:
        return None
    if "NUMBA_CACHE_DIR" not in os.environ:  # the package folder may be read-only; keep the cache with dlscope's
        cache = os.environ.get("DLSCOPE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dlscope")
        os.environ["NUMBA_CACHE_DIR"] = os.path.join(cache, "numba")
    try:
        import numba
    except Exception as e:  # noqa: BLE001  (any failure to import means: no kernel)
        warnings.warn(f"numba does not import ({type(e).__name__}: {e}); the tiny MLPs train with torch.compile", stacklevel=2)
        return None
    return numba


numba = _numba()
AVAILABLE = numba is not None

if AVAILABLE:
    _jit = numba.njit(cache=True, nogil=True, error_model="numpy")  # numpy: x / 0 is inf, not a branch that blocks SIMD
else:  # without numba the trainer uses the torch paths; these stay plain Python, never called

    def _jit(fn):
        return fn


@_jit
def _offsets(widths):
    """Row offsets in theta of each layer's weights [out, in] and biases [out], and of each layer's
    units in the activation buffers (row 0 on: the inputs)."""
    n_layers = len(widths) - 1
    w_off = np.empty(n_layers, np.int64)
    b_off = np.empty(n_layers, np.int64)
    a_off = np.empty(n_layers + 1, np.int64)
    off = 0
    for l in range(n_layers):
        w_off[l] = off
        off += widths[l + 1] * widths[l]
        b_off[l] = off
        off += widths[l + 1]
    tot = 0
    for l in range(n_layers + 1):
        a_off[l] = tot
        tot += widths[l]
    return w_off, b_off, a_off, tot


@_jit
def _forward(theta, x, widths, slope, w_off, b_off, a_off, h, z):
    """One example x [in, N] through every member: layer inputs and outputs into h, the
    pre-activations into z (rows a_off[l] ...); the output is row a_off[-1]."""
    n = theta.shape[1]
    for i in range(widths[0]):
        for k in range(n):
            h[i, k] = x[i, k]
    n_layers = len(widths) - 1
    for l in range(n_layers):
        fan_in = widths[l]
        for o in range(widths[l + 1]):
            row = a_off[l + 1] + o
            for k in range(n):
                z[row, k] = theta[b_off[l] + o, k]
            for i in range(fan_in):
                w = w_off[l] + o * fan_in + i
                src = a_off[l] + i
                for k in range(n):
                    z[row, k] += theta[w, k] * h[src, k]
            if l < n_layers - 1:
                for k in range(n):
                    v = z[row, k]
                    h[row, k] = v if v > 0 else v * slope
            else:
                for k in range(n):
                    h[row, k] = z[row, k]


@_jit
def adam_steps(theta, exp_avg, exp_avg_sq, xs, ys, step_size, bc2_sqrt, widths, consts, losses):
    """len(losses) Adam steps on the MSE, step s on batch s % D; updates theta, exp_avg and
    exp_avg_sq in place and writes each step's batch loss (before the step) into losses [S, N].
    consts: (slope, weight_decay, 1 - beta1, beta2, 1 - beta2, eps, 2 / batch) in theta's dtype,
    rounded as torch rounds a Python scalar that meets a tensor."""
    slope, weight_decay, one_minus_b1, beta2, one_minus_b2, eps, two_over_b = consts
    n_par, n = theta.shape
    n_data, batch = xs.shape[0], xs.shape[1]
    n_layers = len(widths) - 1
    w_off, b_off, a_off, tot = _offsets(widths)
    dt = theta.dtype
    h = np.empty((tot, n), dt)
    z = np.empty((tot, n), dt)
    wmax = 1
    for l in range(n_layers + 1):
        wmax = max(wmax, widths[l])
    d = np.empty((wmax, n), dt)  # dloss/dz of the layer being differentiated
    d_below = np.empty((wmax, n), dt)
    acc = np.empty(n, dt)
    grad = np.empty((n_par, n), dt)
    loss = np.empty(n, dt)
    theta_flat, avg_flat, avg_sq_flat, grad_flat = (
        theta.reshape(-1),
        exp_avg.reshape(-1),
        exp_avg_sq.reshape(-1),
        grad.reshape(-1),
    )
    out_row = a_off[n_layers]
    for s in range(losses.shape[0]):
        j = s % n_data
        grad[:, :] = 0
        loss[:] = 0
        for b in range(batch):
            _forward(theta, xs[j, b], widths, slope, w_off, b_off, a_off, h, z)
            for k in range(n):
                r = h[out_row, k] - ys[j, b, k]
                loss[k] += r * r
                d[0, k] = r * two_over_b
            for l in range(n_layers - 1, -1, -1):
                fan_in = widths[l]
                for o in range(widths[l + 1]):
                    for k in range(n):
                        grad[b_off[l] + o, k] += d[o, k]
                    for i in range(fan_in):
                        w = w_off[l] + o * fan_in + i
                        src = a_off[l] + i
                        for k in range(n):
                            grad[w, k] += d[o, k] * h[src, k]
                if l > 0:
                    for i in range(fan_in):
                        for k in range(n):
                            acc[k] = 0
                        for o in range(widths[l + 1]):
                            w = w_off[l] + o * fan_in + i
                            for k in range(n):
                                acc[k] += d[o, k] * theta[w, k]
                        row = a_off[l] + i
                        for k in range(n):
                            d_below[i, k] = acc[k] if z[row, k] > 0 else acc[k] * slope
                    d, d_below = d_below, d
        for k in range(n):
            losses[s, k] = loss[k] / batch
        # Adam with coupled weight decay (torch.optim.Adam; flat_mlp.adam_update)
        c2 = bc2_sqrt[s]
        for q in range(n_par * n):  # one long loop over the flat arrays (p = q // n, member k = q % n)
            g = grad_flat[q] + weight_decay * theta_flat[q]
            m = avg_flat[q]
            m = m + one_minus_b1 * (g - m)
            v = avg_sq_flat[q] * beta2 + one_minus_b2 * g * g
            avg_flat[q] = m
            avg_sq_flat[q] = v
            theta_flat[q] -= step_size[s, q % n] * (m / (np.sqrt(v) / c2 + eps))


@_jit
def mse(theta, x, y, widths, consts):
    """Each member's mean squared error on x [n_ex, in, N], y [n_ex, N] -> [N]; consts: (slope,)."""
    slope = consts[0]
    n = theta.shape[1]
    w_off, b_off, a_off, tot = _offsets(widths)
    h = np.empty((tot, n), theta.dtype)
    z = np.empty((tot, n), theta.dtype)
    out = np.zeros(n, theta.dtype)
    out_row = a_off[len(widths) - 1]
    for b in range(x.shape[0]):
        _forward(theta, x[b], widths, slope, w_off, b_off, a_off, h, z)
        for k in range(n):
            r = h[out_row, k] - y[b, k]
            out[k] += r * r
    for k in range(n):
        out[k] /= x.shape[0]
    return out


# --------------------------------------------------------------------------- torch in, torch out


# The kernel's lanes are the members, so its cost grows with the number of units times the batch,
# one short loop each; torch.compile's fused loops run over the units instead. Measured on one idle
# core (bench/bench_mlp_step.py and the min-ratio step; µs per member-step, or ms per step):
#   mlp-deep (widest layer 10), batch 1   kernel 2.20 µs   torch.compile 15.5 µs
#   mlp-mid (18), batch 1                 kernel 2.24 µs   torch.compile  9.8 µs
#   mlp-shallow (190), batch 1            kernel 2.28 µs   torch.compile  1.06 µs (after 1,000 epochs)
#   mlp-minratio (128), full batch of 100, 100 members: kernel 2.77 ms, torch.compile 0.58 ms
# but over a whole run at batch 1 mlp-shallow took 66 s in the kernel and 93 s compiled (its compile,
# and subnormals later in training, included: `run all`, quick, 2026-12-06). So the kernel takes
# every network at small batches, and the narrow ones at any batch.
MAX_WIDTH = 64  # at larger batches, the widest layer the kernel takes
SMALL_BATCH = 16  # up to this many examples per step, the kernel whatever the width


def suits(spec: MLPSpec, batch_size: int) -> bool:
    """Whether the kernel is the faster way for this architecture and batch size (see above)."""
    return batch_size <= SMALL_BATCH or max(spec.widths) <= MAX_WIDTH


def usable(theta: torch.Tensor) -> bool:
    """Whether the kernel can train these weights: numba present, CPU tensors of float32/64."""
    return AVAILABLE and theta.device.type == "cpu" and theta.dtype in (torch.float32, torch.float64)


@contextmanager
def _flush_denormals():
    """Subnormal floats (below 1.2e-38 in float32) computed as zero while the kernel runs.

    Through eight leaky-ReLU layers (slope 0.01) gradients and Adam's second moments reach the
    subnormal range, where each operation costs the CPU ~100x a normal one: measured, 158 ms
    against 14 ms per func-fit epoch of mlp-deep. Flushing them changes values only below 1e-38.
    The setting is the calling thread's (the CPU's MXCSR), so it is restored right after; torch
    has no getter, so "restored" means off, torch's default."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy())


def run_adam_steps(theta, exp_avg, exp_avg_sq, xs, ys, step_size, bc2_sqrt, *, spec: MLPSpec, weight_decay, betas, eps):
    """The torch-layout front of adam_steps: theta, exp_avg, exp_avg_sq [N, P]; xs [D, N, B, in];
    ys [D, N, B]; step_size [S, N, 1]; bc2_sqrt [S, 1, 1]. Returns (theta, exp_avg, exp_avg_sq,
    losses [S, N]) as new torch tensors, as fast_mlp.train_steps does."""
    dt = np.dtype(str(theta.dtype).removeprefix("torch."))
    state = [_np(t.T) for t in (theta, exp_avg, exp_avg_sq)]
    losses = np.empty((step_size.shape[0], theta.shape[0]), dt)
    with _flush_denormals():
        adam_steps(
            *state,
            _np(xs.permute(0, 2, 3, 1)),
            _np(ys.permute(0, 2, 1)),
            _np(step_size[..., 0]),
            _np(bc2_sqrt.reshape(-1)),
            np.asarray(spec.widths, np.int64),
            np.array([spec.slope, weight_decay, 1 - betas[0], betas[1], 1 - betas[1], eps, 2.0 / xs.shape[2]], dt),
            losses,
        )
    return (*(torch.from_numpy(a).T.contiguous() for a in state), torch.from_numpy(losses))


def run_mse(theta: torch.Tensor, spec: MLPSpec, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's MSE on x [n, in] (shared) and y [N, n]: [N]."""
    dt = np.dtype(str(theta.dtype).removeprefix("torch."))
    xs = _np(x.to(theta.dtype)[:, :, None].expand(*x.shape, theta.shape[0]))
    with _flush_denormals():
        out = mse(_np(theta.T), xs, _np(y.to(theta.dtype).T), np.asarray(spec.widths, np.int64), np.array([spec.slope], dt))
    return torch.from_numpy(out)
