"""Cost of one member-step of the tiny MLPs at batch 1 (func-fit's quick run), three ways, from the
same trained state, beside the arithmetic bound.

    eager          fast_mlp.train_steps: the hand-written steps as torch ops (bmm), one call per op
    torch.compile  the path before issue 20: an epoch per torch.while_loop call, compiled by inductor
    numba kernel   engine/mlp_kernel.py: an epoch per call of one machine-code loop, members as SIMD
                   lanes, subnormals flushed

The state is a warmed-up training (--warm epochs with the kernel), because a fresh network is not
what an epoch costs later: after a few hundred epochs mlp-deep's gradients and Adam moments reach
the subnormal floats, which cost the CPU ~100x per operation. The bound: the step's floating-point
operations (forward 2·Σ in·out, backward 4·Σ in·out, Adam and weight decay ~12·P) at this core's
measured single-thread matmul rate (a 512x512 float32 matmul, the best the core does).

    python bench/bench_mlp_step.py                  # mlp-deep, mlp-mid, mlp-shallow; ~3 min here
    python bench/bench_mlp_step.py --models mlp-deep --epochs 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dlscope.engine import TrainConfig, fast_mlp
from dlscope.experiments import func_fit as ff


def matmul_gflops(n: int = 512, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def step_flops(spec) -> int:
    macs = sum(o * i for o, i in spec.shapes)
    return 2 * macs + 4 * macs + 12 * spec.n_params


def trainer(model: str, seeds: list[int], epochs: int, **kw) -> fast_mlp.FastMLPTrainer:
    return fast_mlp.FastMLPTrainer(model, TrainConfig(epochs, 1, 4e-4, 1e-4, loss="mse"), seeds, **kw)


def time_epochs(tr: fast_mlp.FastMLPTrainer, x, y, epochs: int) -> float:
    tr.train_epoch(x, y)  # compiles (or loads the cache) outside the timing
    t0 = time.perf_counter()
    for _ in range(epochs):
        tr.train_epoch(x, y)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["mlp-deep", "mlp-mid", "mlp-shallow"])
    p.add_argument("--warm", type=int, default=1000, help="epochs trained before timing (kernel)")
    p.add_argument("--epochs", type=int, default=30, help="epochs timed per path")
    p.add_argument("--out", default=str(Path(__file__).with_name("results-bench_mlp_step.json")))
    a = p.parse_args()
    torch.set_num_threads(1)
    settings = {**ff.PROFILES["quick"], "seed": 0}
    x = ff.inputs(settings["points"])
    members = ff.members(settings)
    y = torch.stack([ff.FUNCTIONS[m["function"]](x[:, 0]) for m in members])
    seeds = [m["seed"] for m in members]
    gflops = matmul_gflops()
    print(f"one core: {gflops:.1f} GFLOP/s (float32 matmul); {len(seeds)} members, batch 1, {settings['points']} steps/epoch")
    rows = []
    for model in a.models:
        warm = trainer(model, seeds, 10**9, compile=True)
        for _ in range(a.warm):
            warm.train_epoch(x, y)
        state = {k: getattr(warm, k).clone() for k in ("theta", "exp_avg", "exp_avg_sq")}
        row = {"model": model, "members": len(seeds), "flops_per_member_step": step_flops(warm.spec)}
        row["bound_us"] = row["flops_per_member_step"] / (gflops * 1e3)
        for path, kw in [
            ("eager", {"compile": False}),
            ("torch.compile", {"compile": True, "kernel": False}),
            ("numba kernel", {"compile": True, "kernel": "always"}),
        ]:
            tr = trainer(model, seeds, 10**9, **kw)
            for k, v in state.items():
                setattr(tr, k, v.clone())
            tr.t, tr.epoch = warm.t, warm.epoch
            epochs = max(2, a.epochs // 10) if path == "eager" else a.epochs  # eager: ~100x slower
            seconds = time_epochs(tr, x, y, epochs)
            row[f"{path}_us"] = seconds / (epochs * settings["points"] * len(seeds)) * 1e6
        row["kernel_vs_compile"] = row["torch.compile_us"] / row["numba kernel_us"]
        row["kernel_vs_bound"] = row["numba kernel_us"] / row["bound_us"]
        rows.append(row)
        print(
            f"{model}: µs per member-step  eager {row['eager_us']:.2f}  torch.compile {row['torch.compile_us']:.2f}  "
            f"numba kernel {row['numba kernel_us']:.3f}  bound {row['bound_us']:.4f} ({row['flops_per_member_step']} FLOP)  "
            f"kernel/compile {row['kernel_vs_compile']:.1f}x faster, {row['kernel_vs_bound']:.0f}x the bound"
        )
    Path(a.out).write_text(json.dumps({"one_core_gflops": gflops, "warm_epochs": a.warm, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
