"""Every benchmark workload, one after another in this process; writes bench/results.json.

    python bench/run_all.py --quick          # all workloads at small sizes (about 5-10 minutes on 2 CPU cores)
    python bench/run_all.py                  # full sizes (whole epochs, more repeats)
    python bench/run_all.py --only func-fit-6 mnist-epoch
    python bench/run_all.py --quick --device cuda --threads 4   # on a GPU: both sides there

Each record: {"workload", "dlscope_s", "reference_s", "ratio", ...}, medians of wall-clock
seconds over the repeats, plus the CPU-time figures and workload-specific fields (see README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_cifar_epoch  # noqa: E402
import bench_func_fit  # noqa: E402
import bench_hessians  # noqa: E402
import bench_min_ratio  # noqa: E402
import bench_mnist_epoch  # noqa: E402
from common import machine, report, set_up  # noqa: E402

WORKLOADS = {  # (quick, repeats, device) -> record
    "func-fit-6": lambda q, r, d: bench_func_fit.run(1, q, r, device=d),
    "func-fit-48": lambda q, r, d: bench_func_fit.run(8, q, r, device=d),
    "min-ratio-100": lambda q, r, d: bench_min_ratio.run(q, r, device=d),
    "mnist-epoch": lambda q, r, d: bench_mnist_epoch.run(q, r, d),
    "cifar-epoch-cnn-1": lambda q, r, d: bench_cifar_epoch.run("cnn-1", q, r, d),
    "cifar-epoch-cnn-7": lambda q, r, d: bench_cifar_epoch.run("cnn-7", q, r, d),
    "hessians-100": lambda q, r, d: bench_hessians.run(q, r, d),
}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description="dlscope vs plain PyTorch, every workload")
    p.add_argument("--quick", action="store_true", help="small sizes: the whole suite within 10 minutes on 2 CPU cores")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per side (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default 1: see README)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where both sides run")
    p.add_argument("--only", nargs="+", choices=list(WORKLOADS), help="run only these workloads")
    p.add_argument("--out", default=str(BENCH / "results.json"))
    args = p.parse_args(argv)
    set_up(args.threads, args.device)
    results, t0 = [], time.perf_counter()
    for name in args.only or WORKLOADS:
        t = time.perf_counter()
        print(f"--- {name}", file=sys.stderr, flush=True)
        r = WORKLOADS[name](args.quick, args.repeats, args.device)
        r["bench_seconds"] = time.perf_counter() - t
        results.append(r)
        report([r], None)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")  # as it goes: a partial run keeps its results
    print(
        f"--- all done in {time.perf_counter() - t0:.0f} s on {machine()['cpu']} ({args.threads} thread(s)); wrote {args.out}",
        file=sys.stderr,
    )
    return results


if __name__ == "__main__":
    main()
