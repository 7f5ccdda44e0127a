"""func-fit at batch size 1: mlp-deep, mlp-mid, mlp-shallow on f1 and f2 (x seeds), 300 points,
Adam lr 4e-4, weight decay 1e-4, full-data MSE after every epoch.

dlscope: what `experiments/func_fit.py` runs: per architecture one FastMLPTrainer whose members
are the (function, seed) pairs, all in lock-step, compiled.
reference: one model at a time, TensorDataset + DataLoader(batch_size=1), eager Adam.

Both are timed per epoch of all trainings (after dlscope's first epoch, which compiles; the
compile time is reported, and folded into `ratio_full_run`, the ratio over the full profile's
20,000 epochs). The reference's trainings of one architecture all cost the same, so --quick
times one seed per (model, function) and scales by the number of seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import Clock, EpochSampler, alternate, machine, max_rel_diff, now, parse_args, report, result, set_up  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from dlscope import models  # noqa: E402
from dlscope.engine import TrainConfig  # noqa: E402
from dlscope.engine.fast_mlp import FastMLPTrainer  # noqa: E402
from dlscope.experiments.func_fit import FUNCTIONS, inputs  # noqa: E402

MODELS = ["mlp-deep", "mlp-mid", "mlp-shallow"]
FUNCS = ["f1", "f2"]
LR, WD, POINTS, FULL_EPOCHS = 4e-4, 1e-4, 300, 20000


def reference_training(model_name: str, seed: int, x: torch.Tensor, y: torch.Tensor, epochs: int):
    """The plain loop. Returns the full-data MSE at init and after each epoch."""
    torch.manual_seed(seed)
    model = models.build(model_name).to(x.device)
    sampler = EpochSampler(len(x), seed)  # dlscope's data order, so the curves compare
    loader = DataLoader(TensorDataset(x, y.unsqueeze(1)), batch_size=1, sampler=sampler)
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WD)
    with torch.no_grad():
        losses = [F.mse_loss(model(x), y.unsqueeze(1)).item()]
    for epoch in range(epochs):
        sampler.epoch = epoch
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.mse_loss(model(xb), yb)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            losses.append(F.mse_loss(model(x), y.unsqueeze(1)).item())
    return losses


def run(seeds: int, quick: bool, repeats: int, compile=True, device="cpu") -> dict:
    workload = f"func-fit-{len(MODELS) * len(FUNCS) * seeds}"
    x = inputs(POINTS, device)
    targets = {f: FUNCTIONS[f](x[:, 0]) for f in FUNCS}
    seed_list = list(range(seeds))
    ref_seeds = seed_list[:1] if quick else seed_list
    ref_epochs, dl_epochs = (1, 10) if quick else (2, 20)

    # dlscope, laid out as func_fit lays it out: one trainer per model, members (function, seed)
    cfg = TrainConfig(FULL_EPOCHS, 1, LR, WD, loss="mse")
    trainers, ys = {}, {}
    t0 = now()
    for m in MODELS:
        ys[m] = torch.stack([targets[f] for f in FUNCS for _ in seed_list])
        trainers[m] = FastMLPTrainer(m, cfg, [s for _ in FUNCS for s in seed_list], device, compile=compile)
        trainers[m]._record({"loss": trainers[m].evaluate(x, ys[m])})
        trainers[m]._record({"batch_loss": trainers[m].train_epoch(x, ys[m]), "loss": trainers[m].evaluate(x, ys[m])})
    first_epoch_s = now() - t0
    compile_s = {m: tr.compile_seconds for m, tr in trainers.items()}

    def dlscope():
        with Clock() as c:
            for _ in range(dl_epochs):
                for m, tr in trainers.items():
                    tr._record({"batch_loss": tr.train_epoch(x, ys[m]), "loss": tr.evaluate(x, ys[m])})
        return c.wall / dl_epochs, c.cpu / dl_epochs

    curves = {}

    def reference():
        with Clock() as c:
            for m in MODELS:
                for f in FUNCS:
                    for s in ref_seeds:
                        curves[(m, f, s)] = reference_training(m, s, x, targets[f], ref_epochs)
        scale = len(seed_list) / len(ref_seeds) / ref_epochs
        return c.wall * scale, c.cpu * scale

    ref_t, dl_t = alternate(reference, dlscope, repeats)

    # the same trainings, same initial weights and data order: the loss curves must agree
    diffs = []
    for (m, f, s), losses in curves.items():
        i = FUNCS.index(f) * len(seed_list) + s
        got = [float(h[i]) for h in trainers[m].history["loss"][: len(losses)]]
        diffs.append(max_rel_diff(got, losses))
    total_compile = sum(compile_s.values())
    r = result(
        workload,
        dl_t,
        ref_t,
        unit=f"seconds per epoch of all {len(MODELS) * len(FUNCS) * seeds} trainings ({POINTS} steps each, plus full-data MSE)",
        compile_s=total_compile,
        compile_s_per_model=compile_s,
        first_epoch_s=first_epoch_s,
        compiled=all(bool(tr.compile) for tr in trainers.values()),
        reference_trainings_timed=len(MODELS) * len(FUNCS) * len(ref_seeds),
        reference_epochs_timed=ref_epochs,
        dlscope_epochs_timed=dl_epochs,
        repeats=repeats,
        max_rel_diff_loss=max(diffs),
        compared_epochs=ref_epochs,
        machine=machine(),
    )
    # the full profile's 20,000 epochs, compile time included
    r["ratio_full_run"] = r["reference_s"] * FULL_EPOCHS / (total_compile + r["dlscope_s"] * FULL_EPOCHS)
    return r


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument(
                "--seeds", type=int, default=1, help="seeds per (model, function): 1 gives func-fit-6, 8 gives func-fit-48"
            ),
            p.add_argument("--eager", action="store_true", help="do not compile the fast path"),
        ),
    )
    set_up(args.threads or 1, args.device)
    report([run(args.seeds, args.quick, args.repeats, compile=not args.eager, device=args.device)], args.out)


if __name__ == "__main__":
    main()
