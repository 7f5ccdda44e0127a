"""What every benchmark shares: timing, the machine's description, results as JSON, and the
pieces of the plain reference loop (the original study's style: TensorDataset / Dataset with
per-sample transforms, DataLoader, one model at a time, eager torch.optim.Adam).

Both sides of a workload run in one process, alternately (reference, dlscope, reference, ...), so
that a busy machine slows both alike; each side's figure is the median over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Sampler

BENCH = Path(__file__).resolve().parent
os.environ.setdefault("DLSCOPE_DATA", str(BENCH.parent.parent / "shared" / "data"))

from dlscope.engine import epoch_generator  # noqa: E402


def parse_args(description: str, extra=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes: the whole suite within 10 minutes on 2 CPU cores")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per side (median reported)")
    p.add_argument(
        "--out", default=str(BENCH / f"results-{Path(sys.argv[0]).stem}.json"), help="write the results (JSON list) here"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: the workload's choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where both sides run (data, models, optimizer)")
    if extra:
        extra(p)
    return p.parse_args()


def set_up(n: int | None, device="cpu") -> int:
    """Both sides run with the same number of threads, in a process set up for `device` as
    dlscope's trials are (engine.accel.configure: deterministic kernels on CUDA).

    The tiny-MLP workloads use 1 thread: none of their operations is large enough for a second
    thread to help, and on a shared machine a second thread's synchronisation can make a plain
    loop over 10x slower (measured: one epoch of mlp-shallow at batch size 1 took 0.45 s with 1
    thread and 5.7-8.4 s with 2 on a busy 2-core machine), which would flatter dlscope."""
    from dlscope.engine import accel

    accel.configure(device)
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def now() -> float:
    return time.perf_counter()


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def alternate(reference, dlscope, repeats: int) -> tuple[list, list]:
    """Call reference() and dlscope() alternately `repeats` times each. Each returns the (wall,
    CPU) seconds of the work it timed, in the workload's unit. Returns both lists."""
    ref, dl = [], []
    for _ in range(repeats):
        ref.append(reference())
        dl.append(dlscope())
    return ref, dl


def result(workload: str, dlscope_times: list, reference_times: list, **extra) -> dict:
    """The JSON record: medians of wall-clock seconds (dlscope_s, reference_s, ratio) and of CPU
    seconds (..._cpu_s, ratio_cpu: on a shared machine, CPU time is what each side needed,
    whatever else ran)."""
    dl_w, ref_w = median([t[0] for t in dlscope_times]), median([t[0] for t in reference_times])
    dl_c, ref_c = median([t[1] for t in dlscope_times]), median([t[1] for t in reference_times])
    r = {
        "workload": workload,
        "dlscope_s": dl_w,
        "reference_s": ref_w,
        "ratio": ref_w / dl_w,
        "dlscope_cpu_s": dl_c,
        "reference_cpu_s": ref_c,
        "ratio_cpu": ref_c / dl_c,
        "dlscope_times": dlscope_times,
        "reference_times": reference_times,
    }
    r.update(extra)
    return r


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_initialized() else None,
    }


def report(results: list[dict], out: str | None) -> None:
    for r in results:
        print(
            f"{r['workload']:>18}: dlscope {r['dlscope_s']:.4g} s, reference {r['reference_s']:.4g} s, ratio {r['ratio']:.1f}x"
            f" (CPU time: {r['ratio_cpu']:.1f}x)" + (f"  [{r['unit']}]" if "unit" in r else "")
        )
    if out:
        Path(out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {out}", file=sys.stderr)


def matmul_gflops(n: int = 2048, repeats: int = 5, device="cpu") -> float:
    """GFLOP/s of a large float32 matrix product on this device, now (its peak as PyTorch reaches
    it, for comparison with a workload's achieved rate)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        with Clock() as c:
            a @ b
        times.append(c.wall)
    return 2 * n**3 / median(times) / 1e9


class EpochSampler(Sampler):
    """The order dlscope visits the data in: torch.randperm with epoch_generator(seed, epoch).
    Set .epoch before each epoch (as with DistributedSampler). Lets the reference loop see the
    same order as dlscope, so the two loss curves can be compared."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch, "cpu")).tolist())

    def __len__(self) -> int:
        return self.n


def max_rel_diff(a, b) -> float:
    """Largest |a - b| / |b| over two sequences of losses."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float(((a - b).abs() / b.abs().clamp_min(1e-30)).max())


class Clock:
    """Wall-clock and CPU seconds of a block (CPU: this process, all its threads). Where CUDA is
    in use, the GPU's queued work is waited for at both ends, so the block's kernels are counted."""

    def __enter__(self):
        sync()
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        sync()
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def sync() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def classifier_epoch(model, loader, opt) -> float:
    """One training epoch of the plain loop (cross-entropy on the model's output); returns the
    mean batch loss."""
    import torch.nn.functional as F

    model.train()
    dev = next(model.parameters()).device
    total, steps = 0.0, 0
    for xb, yb in loader:
        xb, yb = xb.to(dev), yb.to(dev)  # the usual loop on a GPU: each batch copied over
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        total += loss.item()
        steps += 1
    return total / steps


def training_flops(model, x, y) -> float:
    """FLOPs of one training step (forward and backward) on the batch x, counted by PyTorch."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


# --------------------------------------------------------------------------- the original pipeline
# torchvision is not installed (and must not replace the pinned torch), so its data sets and
# transforms are re-implemented here as torchvision 0.x implements them for PIL images: the
# data set keeps uint8 HWC arrays and makes a PIL image per sample; the transforms run per sample.


class TorchvisionStyleImages(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10 / MNIST with a transform pipeline, per sample:
    CIFAR-10: RandomCrop(32, padding=4, padding_mode="reflect"), RandomHorizontalFlip(),
    ToTensor(), Normalize(mean, std).   MNIST: Resize(32) (bilinear), ToTensor(), Normalize."""

    def __init__(self, x_uint8: torch.Tensor, targets: torch.Tensor, kind: str):
        import numpy as np

        from dlscope import data

        self.kind = kind
        self.data = np.ascontiguousarray(x_uint8.permute(0, 2, 3, 1).numpy())  # HWC, as torchvision stores it
        if kind == "mnist":
            self.data = self.data[..., 0]
        self.targets = targets.tolist()
        mean, std = (data.MNIST_MEAN, data.MNIST_STD) if kind == "mnist" else (data.CIFAR_MEAN, data.CIFAR_STD)
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        import numpy as np
        from PIL import Image

        img = Image.fromarray(self.data[i], mode="L" if self.kind == "mnist" else None)
        if self.kind == "mnist":
            img = img.resize((32, 32), Image.BILINEAR)  # Resize(32)
        else:
            img = Image.fromarray(np.pad(np.asarray(img), ((4, 4), (4, 4), (0, 0)), mode="reflect"))  # pad, reflect
            top, left = torch.randint(0, 9, (1,)).item(), torch.randint(0, 9, (1,)).item()  # RandomCrop
            img = img.crop((left, top, left + 32, top + 32))
            if torch.rand(1) < 0.5:  # RandomHorizontalFlip
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.array(img, copy=True)  # ToTensor
        t = torch.from_numpy(arr).view(32, 32, -1).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return t.sub_(self.mean).div_(self.std), self.targets[i]  # Normalize
