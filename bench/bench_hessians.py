"""min-ratio's 100 exact Hessians: the MSE of mlp-minratio (385 parameters) on f1's 300 points, with
respect to all parameters, float64 (as the experiment computes them).

dlscope: engine.fast_mlp.hessians: all 100 at once, in closed form (Gauss-Newton part as one
batched product of per-sample Jacobians, plus the cross-layer second-derivative blocks).
reference: one model at a time, torch.autograd.functional.hessian of the loss as a function of
the flat parameter vector (385 double-backward passes per Hessian).
Also measured (extra field): torch.func.hessian (forward-over-reverse) one model at a time, as
analysis.Objective.hessian computes it.

The reference is timed on a few members and scaled to 100 (every Hessian costs the same); the
Hessians of those members are compared entry by entry.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import Clock, alternate, machine, parse_args, report, result, set_up  # noqa: E402
from torch.func import functional_call  # noqa: E402

from dlscope import models  # noqa: E402
from dlscope.engine import fast_mlp  # noqa: E402
from dlscope.experiments.func_fit import f1, inputs  # noqa: E402

MODEL, MEMBERS, POINTS = "mlp-minratio", 100, 300


def flat_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """The mean squared error of `model` on (x, y) as a function of one flat parameter vector."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def loss(theta):
        pieces = torch.split(theta, [s.numel() for s in shapes])
        out = functional_call(model, {k: v.view(s) for k, v, s in zip(names, pieces, shapes)}, (x,))
        return (out.reshape(-1) - y).pow(2).mean()

    return loss


def min_ratio(H: torch.Tensor, rel_tol: float = 1e-9) -> float:
    """Fraction of eigenvalues > rel_tol * max|eigenvalue| (min-ratio's definition)."""
    eigs = torch.linalg.eigvalsh(H)
    return float((eigs > rel_tol * eigs.abs().max()).double().mean())


def run(quick: bool, repeats: int, device="cpu") -> dict:
    dt = torch.float64
    x = inputs(POINTS, device).to(dt)
    y = f1(x[:, 0])
    seeds = list(range(MEMBERS))
    theta = fast_mlp.init_flat(MODEL, seeds, device, dt)  # member i = manual_seed(i); models.build
    torch.manual_seed(0)
    template = models.build(MODEL).to(device, dt)
    spec = fast_mlp.spec_of(template)
    ref_members = 5 if quick else 20
    loss = flat_loss(template, x, y)
    got, ref = {}, {}

    def dlscope():
        with Clock() as c:
            got["H"] = fast_mlp.hessians(theta, spec, x, y)
        return c.wall, c.cpu

    def reference():
        with Clock() as c:
            for i in range(ref_members):
                ref[i] = torch.autograd.functional.hessian(loss, theta[i])
        return c.wall * MEMBERS / ref_members, c.cpu * MEMBERS / ref_members

    ref_t, dl_t = alternate(reference, dlscope, repeats)
    err = max(float((got["H"][i] - ref[i]).abs().max()) for i in ref)
    scale = max(float(ref[i].abs().max()) for i in ref)
    ratio_ok = all(min_ratio(got["H"][i]) == min_ratio(ref[i]) for i in ref)
    with Clock() as c:  # extra: torch.func.hessian (forward-over-reverse), one model at a time
        for i in range(2):
            torch.func.hessian(loss)(theta[i])
    r = result(
        "hessians-100",
        dl_t,
        ref_t,
        unit="seconds for 100 exact 385x385 Hessians (float64, 300 points)",
        reference_members_timed=ref_members,
        repeats=repeats,
        max_abs_diff=err,
        max_abs_entry=scale,
        same_min_ratio=ratio_ok,
        machine=machine(),
    )
    r["func_hessian_loop_s"] = c.wall * MEMBERS / 2
    r["ratio_func_hessian_loop"] = r["func_hessian_loop_s"] / r["dlscope_s"]
    return r


def main():
    args = parse_args(__doc__.splitlines()[0])
    set_up(args.threads or 1, args.device)
    report([run(args.quick, args.repeats, args.device)], args.out)


if __name__ == "__main__":
    main()
