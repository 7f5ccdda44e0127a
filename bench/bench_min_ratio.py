"""min-ratio's 100 trainings: mlp-minratio (1 > 128 > 1, ReLU) on f1 (300 points), full-batch
Adam lr 1e-4 on the MSE (phase 1 of the experiment, 20,000 steps at the full profile).

dlscope: the 100 members as one FastMLPTrainer, full batch: a chunk of steps per compiled call.
reference: one model at a time, TensorDataset + DataLoader(batch_size=300), eager Adam.
Also measured (extra fields): dlscope's generic vectorized Ensemble + BatchedAdam (autograd through
vmap), and the reference loop without a DataLoader (the batch as one tensor).

Both sides are timed per step of all 100 trainings: the reference on a few trainings (each
training costs the same) and scaled to 100, dlscope on all 100 at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import (  # noqa: E402
    Clock,
    EpochSampler,
    alternate,
    machine,
    max_rel_diff,
    median,
    now,
    parse_args,
    report,
    result,
    set_up,
)
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from dlscope import models  # noqa: E402
from dlscope.engine import BatchedAdam, Ensemble, TrainConfig, loss_per_member  # noqa: E402
from dlscope.engine.fast_mlp import FastMLPTrainer  # noqa: E402
from dlscope.experiments.func_fit import f1, inputs  # noqa: E402

MODEL, TRAININGS, POINTS, LR, FULL_STEPS = "mlp-minratio", 100, 300, 1e-4, 20000


def reference_training(seed: int, x: torch.Tensor, y: torch.Tensor, steps: int, loader: bool = True):
    """The plain loop, full batch. Returns the loss of each step."""
    torch.manual_seed(seed)
    model = models.build(MODEL).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sampler = EpochSampler(len(x), seed)
    batches = (
        DataLoader(TensorDataset(x, y.unsqueeze(1)), batch_size=len(x), sampler=sampler) if loader else [(x, y.unsqueeze(1))]
    )
    losses = []
    for step in range(steps):  # one epoch = one step
        sampler.epoch = step
        for xb, yb in batches:
            opt.zero_grad()
            loss = F.mse_loss(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def run(quick: bool, repeats: int, compile=True, device="cpu") -> dict:
    x = inputs(POINTS, device)
    y = f1(x[:, 0])
    seeds = list(range(TRAININGS))
    ref_trainings, ref_steps, dl_steps = (4, 20, 200) if quick else (10, 100, 500)

    cfg = TrainConfig(FULL_STEPS, POINTS, LR, loss="mse")
    trainer = FastMLPTrainer(MODEL, cfg, seeds, device, compile=compile)
    t0 = now()
    dl_losses = [trainer.train_full_batch(x, y, dl_steps)]  # the first call compiles
    first_s = now() - t0

    def dlscope():
        with Clock() as c:
            dl_losses.append(trainer.train_full_batch(x, y, dl_steps))
        return c.wall / dl_steps, c.cpu / dl_steps

    ref_curves = {}

    def reference(loader=True):
        with Clock() as c:
            for s in seeds[:ref_trainings]:
                ref_curves[s] = reference_training(s, x, y, ref_steps, loader)
        scale = TRAININGS / ref_trainings / ref_steps
        return c.wall * scale, c.cpu * scale

    ref_t, dl_t = alternate(reference, dlscope, repeats)
    diff = max(max_rel_diff(dl_losses[0][:ref_steps, s].tolist(), ref_curves[s]) for s in ref_curves)

    # extra: the reference without a DataLoader, and dlscope's generic ensemble path (autograd + vmap)
    plain = median([reference(loader=False)[0] for _ in range(repeats)])
    ens = Ensemble.from_seeds(MODEL, seeds, device)
    opt = BatchedAdam(ens.parameters(), LR)
    times = []
    for i in range(6 if quick else 21):
        with Clock() as c:
            loss = loss_per_member(ens.forward_shared(x), y.expand(TRAININGS, -1), "mse")
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
        times.append(c.wall)
    ens_s = median(times[1:])

    r = result(
        "min-ratio-100",
        dl_t,
        ref_t,
        unit="seconds per full-batch Adam step of all 100 trainings",
        compile_s=trainer.compile_seconds,
        first_call_s=first_s,
        compiled=bool(trainer.compile),
        reference_trainings_timed=ref_trainings,
        reference_steps_timed=ref_steps,
        dlscope_steps_timed=dl_steps,
        repeats=repeats,
        max_rel_diff_loss=diff,
        compared_steps=ref_steps,
        machine=machine(),
    )
    r["ratio_full_run"] = r["reference_s"] * FULL_STEPS / (trainer.compile_seconds + r["dlscope_s"] * FULL_STEPS)
    r["reference_without_dataloader_s"] = plain
    r["ratio_vs_reference_without_dataloader"] = plain / r["dlscope_s"]
    r["ensemble_vmap_s"] = ens_s
    r["ratio_ensemble_vmap"] = r["reference_s"] / ens_s
    return r


def main():
    args = parse_args(
        __doc__.splitlines()[0], lambda p: p.add_argument("--eager", action="store_true", help="do not compile the fast path")
    )
    set_up(args.threads or 1, args.device)
    report([run(args.quick, args.repeats, compile=not args.eager, device=args.device)], args.out)


if __name__ == "__main__":
    main()
